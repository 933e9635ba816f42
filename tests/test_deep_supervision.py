"""Deep supervision (config.model.deep_supervision): four 1x1 heads on the decoder stages, a loss
with weights halving per stage, the main head's output unchanged, nothing added when off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hanet_jax.models.architectures import model_from_config
from hanet_jax.models.hanet import DECODER_STAGES
from hanet_jax.train.losses import deep_supervision_loss, make_loss

TINY = {"encoder_blocks": (1, 1, 1, 1), "image_size": 64}


def _init(deep_supervision: bool, shapes_only: bool = False):
    model = model_from_config({**TINY, "deep_supervision": deep_supervision})
    x = jnp.zeros((1, 64, 64, 3))
    init = lambda: model.init({"params": jax.random.key(0)}, x, train=False)  # noqa: E731
    return model, (jax.eval_shape(init) if shapes_only else jax.jit(init)())


def _count(tree) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def test_the_heads_add_one_1x1_conv_per_decoder_stage_and_nothing_when_off():
    _, off = _init(False, shapes_only=True)
    _, on = _init(True, shapes_only=True)
    assert not [k for k in off["params"] if k.startswith("ds")]
    heads = {k: v for k, v in on["params"].items() if k.startswith("ds")}
    assert sorted(heads) == ["ds1", "ds2", "ds3", "ds4"]
    expected = sum(filters + 1 for _, filters in DECODER_STAGES)  # kernel (1,1,f,1) + bias
    assert _count(on["params"]) - _count(off["params"]) == expected == 484
    for i, (_, filters) in enumerate(DECODER_STAGES, start=1):
        assert heads[f"ds{i}"]["kernel"].shape == (1, 1, filters, 1)


@pytest.mark.slow
def test_inference_is_the_main_heads_alone():
    model_on, on = _init(True)
    model_off, _ = _init(False, shapes_only=True)
    params_off = {k: v for k, v in on["params"].items() if not k.startswith("ds")}
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    got, state = jax.jit(lambda v, x: model_on.apply(v, x, train=False,
                                                     mutable=["intermediates"]))(on, x)
    want = jax.jit(lambda v, x: model_off.apply(v, x, train=False))(
        {"params": params_off, "batch_stats": on["batch_stats"]}, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # two programs: rounding only
    aux = state["intermediates"]["deep_supervision"]
    assert [a.shape[1] for a in aux] == [4, 8, 16, 32]  # 1/16 .. 1/2 of 64


def test_the_loss_halves_its_weights_per_stage_against_the_resized_mask():
    def loss_fn(logits, targets, weights=None):  # a loss whose value says which stage it saw
        assert targets.shape == logits.shape  # the mask, resized to the stage
        return jnp.mean(logits) + 0.0 * jnp.mean(targets)

    full = jnp.ones((1, 8, 8, 1))
    aux = (jnp.full((1, 2, 2, 1), 4.0), jnp.full((1, 4, 4, 1), 2.0))  # coarsest first
    got = deep_supervision_loss(loss_fn, full, aux, jnp.zeros((1, 8, 8, 1)))
    assert float(got) == pytest.approx((1 * 1 + 0.5 * 2 + 0.25 * 4) / 1.75)
    # the targets are the mask resized (nearest) to each stage: a lesion in the top-left
    # quadrant is the top-left pixel at 2x2
    mask = jnp.zeros((1, 8, 8, 1)).at[:, :4, :4].set(1.0)
    bce = make_loss("bce")
    coarse = jnp.full((1, 2, 2, 1), -5.0).at[:, 0, 0].set(5.0)  # exactly that, confidently
    fine = jnp.where(mask > 0, 5.0, -5.0)
    got = deep_supervision_loss(bce, fine, (coarse,), mask)
    assert float(got) == pytest.approx(float(bce(fine, mask)), rel=1e-6)


@pytest.mark.slow
def test_the_train_step_trains_every_stages_head():
    from hanet_jax.train.keras_callbacks import ReduceLROnPlateau
    from hanet_jax.train.optimizer import make_tx
    from hanet_jax.train.sharding import make_mesh
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import make_loss_fn, train_step

    model, _ = _init(True, shapes_only=True)
    tx = make_tx(1e-3, 0.9, 0.999, 1e-9)
    state = create_train_state(model, 64, tx, ReduceLROnPlateau(), 0, make_mesh())
    before = jax.tree.map(np.asarray, state.params)
    x = (jax.random.uniform(jax.random.key(2), (2, 64, 64, 3)) * 255).astype(jnp.uint8)
    batch = {"image": x, "mask": (x[..., :1] > 127).astype(jnp.uint8)}
    step = jax.jit(lambda s, b: train_step(s, b, model=model, loss_fn=make_loss_fn("bce_dice"),
                                           tx=tx))
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics.loss.total))
    for i in range(1, 5):  # each stage's head got a gradient from its own loss term
        head = f"ds{i}"
        assert not np.array_equal(np.asarray(state.params[head]["kernel"]),
                                  before[head]["kernel"]), head
