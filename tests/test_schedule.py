"""optimizer.schedule: the release's plateau (constant per-step rate) or a per-step cosine."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _train_helpers as helpers
from hanet_jax.train import config as config_utils
from hanet_jax.train import loop as train_lib
from hanet_jax.train.optimizer import learning_rate_schedule, optimizer_from_config


def _first_update_sizes(tx, steps: int) -> list[float]:
    """|update| per step for a constant unit gradient: Adam's step then equals its rate."""
    params = {"w": jnp.zeros(())}
    state, sizes = tx.init(params), []
    for _ in range(steps):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        sizes.append(float(jnp.abs(updates["w"])))
    return sizes


def test_cosine_decays_the_per_step_rate_over_the_run():
    config = helpers.tiny_config(optimizer__schedule="cosine", optimizer__min_lr=1e-5)
    tx, _, _ = optimizer_from_config(config.optimizer, total_steps=10)
    expected = [float(optax.cosine_decay_schedule(1e-3, 10, alpha=1e-2)(s)) for s in range(10)]
    np.testing.assert_allclose(_first_update_sizes(tx, 10), expected, rtol=1e-4)
    assert expected[0] == pytest.approx(1e-3) and expected[-1] < 5e-5


def test_plateau_keeps_adam_at_the_base_rate():
    tx, _, _ = optimizer_from_config(helpers.tiny_config().optimizer, total_steps=10)
    np.testing.assert_allclose(_first_update_sizes(tx, 3), [1e-3] * 3, rtol=1e-4)
    assert learning_rate_schedule(1e-3) == 1e-3


def test_cosine_needs_the_run_length_and_a_known_name():
    config = helpers.tiny_config(optimizer__schedule="cosine")
    with pytest.raises(ValueError, match="total_steps"):
        optimizer_from_config(config.optimizer)
    bad = helpers.tiny_config(optimizer__schedule="linear")
    with pytest.raises(config_utils.ConfigError, match="config.optimizer.schedule"):
        config_utils.validate_config(bad)


@pytest.mark.slow
def test_trainer_logs_the_cosine_rate_and_leaves_the_plateau_alone(tmp_path):
    # Early stopping and the plateau would act after 1 flat epoch; the plateau must not.
    config = helpers.tiny_config(optimizer__schedule="cosine", optimizer__plateau_patience=1,
                                 optimizer__plateau_min_delta=10.0, model__variant="baseline")
    result = train_lib.train_and_evaluate(config, str(tmp_path / "w"))
    history = result.summary["history"]
    steps = [r["step"] for r in history]
    expected = [float(optax.cosine_decay_schedule(1e-3, steps[-1], alpha=1e-6)(s - 1))
                for s in steps]
    np.testing.assert_allclose([r["learning_rate"] for r in history], expected, rtol=1e-5)
    assert float(result.state.plateau.scale) == 1.0
