"""HA-Net in Flax: exact parameter counts, shapes, names, variants and the paper-only options."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hanet_jax.models.densenet import DenseNet121
from hanet_jax.models.architectures import model_config, model_from_config
from hanet_jax.models.hanet import HANet
from model_fixtures import random_variables

RNGS = {"params": jax.random.key(0), "dropout": jax.random.key(1)}


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@functools.lru_cache(maxsize=None)
def fwd(model):
    """Jitted inference forward, compiled once per model (eager DenseNet is slow on CPU)."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


@functools.lru_cache(maxsize=None)
def train_fwd(model):
    return jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"]))


def abstract_vars(model, size=(256, 256)):
    return jax.eval_shape(lambda: model.init(RNGS, jnp.zeros((1, *size, 3)), train=False))


@pytest.mark.parametrize(
    "variant, trainable, stats",
    [
        ("full", 15_427_713, 89_408),
        ("no_tam", 15_339_329, 89_408),
        ("no_tam_no_sfeb", 11_089_537, 85_184),
        ("baseline", 10_498_945, 84_672),
    ],
)
def test_parameter_counts_match_release(variant, trainable, stats):
    v = abstract_vars(HANet(variant=variant))
    assert n_params(v["params"]) == trainable
    assert n_params(v["batch_stats"]) == stats


def test_densenet_names_and_skip_shapes_non_square():
    enc = DenseNet121()
    x = jnp.zeros((2, 64, 96, 3))
    (feat, skips), v = jax.eval_shape(lambda: enc.init_with_output(RNGS, x, train=False))
    assert feat.shape == (2, 2, 3, 1024)
    assert {k: s.shape for k, s in skips.items()} == {
        "conv1_bn": (2, 32, 48, 64),
        "pool1": (2, 16, 24, 64),
        "pool2_pool": (2, 8, 12, 128),
        "pool3_pool": (2, 4, 6, 256),
        "pool4_pool": (2, 2, 3, 512),
    }
    p = v["params"]
    # Keras DenseNet layer names, so a Keras port is the identity on names.
    assert p["conv1_conv"]["kernel"].shape == (7, 7, 3, 64)
    assert p["conv2_block1_1_conv"]["kernel"].shape == (1, 1, 64, 128)
    assert p["conv5_block16_2_conv"]["kernel"].shape == (3, 3, 128, 32)
    assert p["pool4_conv"]["kernel"].shape == (1, 1, 1024, 512)
    assert set(p["bn"]) == {"scale", "bias"}
    assert len([k for k in p if k.endswith("_conv")]) == 120
    assert len([k for k in p if k.endswith("_bn") or k == "bn"]) == 121


def test_encoder_rejects_sizes_not_divisible_by_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(lambda: DenseNet121().init(RNGS, jnp.zeros((1, 48, 64, 3)), train=False))


def test_attention_tables_sized_from_the_grid():
    p = abstract_vars(HANet(), (64, 96))["params"]["tam"]
    assert p["gsa"]["W"].shape == (6, 6)  # (HW, HW) for a 2x3 grid
    assert p["position_encoding"]["h_embedding_layer"]["embedding"].shape == (2, 128)
    assert p["position_encoding"]["w_embedding_layer"]["embedding"].shape == (3, 128)
    assert p["gsa"]["proj_query"]["kernel"].shape == (1, 1, 256, 32)


@pytest.fixture(scope="module")
def small_full():
    """A `full` model at 64x64 with random BN statistics, one dense layer per encoder block
    (these tests check structure and modes; DenseNet-121's full depth is checked by the
    counts here and by the parity tests), and its input."""
    model = HANet(encoder_blocks=(1, 1, 1, 1))
    x = jax.random.uniform(jax.random.key(3), (2, 64, 64, 3))
    v = random_variables(model, (64, 64))  # compiling model.init would take ~20 s
    v = dict(v, batch_stats=randomize_stats(v["batch_stats"]))
    return model, v, x


def randomize_stats(stats, seed=0):
    leaves, tree = jax.tree_util.tree_flatten_with_path(stats)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = []
    for (path, leaf), k in zip(leaves, keys):
        if path[-1].key == "var":
            out.append(jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5))
        else:
            out.append(0.1 * jax.random.normal(k, leaf.shape))
    return jax.tree_util.tree_unflatten(tree, out)


def test_forward_shapes_and_train_mode(small_full):
    model, v, x = small_full
    logits = fwd(model)(v, x)
    assert logits.shape == (2, 64, 64, 1) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    out, mutated = train_fwd(model)(v, x, jax.random.key(5))
    assert out.shape == logits.shape
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), v["batch_stats"], mutated["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))  # every BN statistic moves in training


def test_sdpa_dropout_only_in_training(small_full):
    model, v, x = small_full
    train = lambda seed: train_fwd(model)(v, x, jax.random.key(seed))[0]
    assert not np.allclose(train(1), train(2))
    # inference is the same model with no dropout at all
    np.testing.assert_array_equal(fwd(model)(v, x), fwd(model.clone(dropout_rate=0.0))(v, x))


def test_intermediates_are_sown(small_full):
    model, v, x = small_full
    # Jitted: DenseNet runs eagerly op by op otherwise (~15 s).
    _, inter = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(v, x)
    inter = inter["intermediates"]
    for key in ("conv1_bn", "pool1", "pool2_pool", "pool3_pool", "features", "bottleneck"):
        assert key in inter
    assert {"gsa_out", "sdpa_out", "tam_out"} <= set(inter["tam"])
    assert all("sfeb_out" in inter[f"dec{i}"] for i in range(1, 5))


@pytest.mark.parametrize("option, value", [("upsampling", "bilinear"), ("conv_order", "conv_bn_relu")])
def test_paper_options_same_parameters_different_graph(small_full, option, value):
    model, v, x = small_full
    other = model.clone(**{option: value})
    # Same parameter tree, so the same weights load; the graph (and output) changes.
    assert jax.tree_util.tree_structure(abstract_vars(other, (64, 64))) == jax.tree_util.tree_structure(v)
    assert not np.allclose(fwd(model)(v, x), fwd(other)(v, x), atol=1e-4)


def test_paper_option_sdpa_projections_adds_three_c_by_c_matrices():
    base = abstract_vars(HANet(), (64, 64))["params"]
    proj = abstract_vars(HANet(sdpa_learned_projections=True), (64, 64))["params"]
    assert {k: proj["tam"]["sdpa"][k]["kernel"].shape for k in ("w_q", "w_k", "w_v")} == {
        "w_q": (256, 256), "w_k": (256, 256), "w_v": (256, 256)}
    assert n_params(proj) - n_params(base) == 3 * 256 * 256


def test_paper_option_tam_concat_triples_bottleneck_channels():
    p = abstract_vars(HANet(tam_merge="concat"), (64, 64))["params"]
    assert p["dec1"]["sfeb"]["conv"]["kernel"].shape == (3, 3, 768, 768)
    assert p["dec1"]["conv"]["kernel"].shape == (3, 3, 256 + 768, 256)


def test_paper_option_imagenet_normalisation_is_applied_inside(small_full):
    model, v, x = small_full
    norm = model.clone(input_normalization="imagenet")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(fwd(norm)(v, x), fwd(model)(v, (x - mean) / std), atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters(small_full):
    model, v, x = small_full
    bf = model.clone(dtype="bfloat16")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a: a.dtype == jnp.float32, abstract_vars(bf, (64, 64))))
    out = fwd(bf)(v, x)
    assert out.dtype == jnp.float32
    ref = fwd(model)(v, x)
    assert np.corrcoef(np.ravel(out), np.ravel(ref))[0, 1] > 0.98


def test_config_round_trip_and_clear_errors():
    model = HANet(variant="no_tam", upsampling="bilinear")
    assert model_from_config(model_config(model)) == model
    with pytest.raises(ValueError, match="model.variant"):
        model_from_config({"variant": "tiny"})
    with pytest.raises(ValueError, match="model.widht"):
        model_from_config({"widht": 3})


def test_encoder_blocks_default_is_densenet121_and_bad_values_are_named():
    assert HANet().encoder_blocks == (6, 12, 24, 16)
    params = abstract_vars(HANet(encoder_blocks=(1, 2, 1, 1)), (64, 64))["params"]["encoder"]
    assert "conv3_block2_2_conv" in params and "conv3_block3_1_conv" not in params
    with pytest.raises(ValueError, match="model.encoder_blocks"):
        model_from_config({"encoder_blocks": [1, 1, 1]})
    assert model_from_config({"encoder_blocks": [1, 1, 1, 1]}).encoder_blocks == (1, 1, 1, 1)
