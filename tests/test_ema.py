"""The weights' moving average (config.optimizer.ema_decay): its arithmetic, that validation and
the best checkpoint use it, an exact resume after a preemption, and a clear error when a
workdir is resumed with the other setting."""

import functools
import os
import shutil
import signal

import numpy as np
import pytest

import _train_helpers as helpers
from hanet_jax.checkpoints import loading as checkpoints_loading
from hanet_jax.checkpoints import training as train_checkpoints
from hanet_jax.train import loop as train_lib
from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.train.sharding import to_host
from hanet_jax.train.state import ema_update

DECAY = 0.5  # 4 steps: a decay near 1 would leave the average at the init (warm-up included)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ema")
    result = train_lib.train_and_evaluate(helpers.tiny_config(optimizer__ema_decay=DECAY),
                                          str(workdir))
    return workdir, result


def test_ema_update_follows_the_warmed_up_decay():
    ema, live = {"w": np.float32(1.0)}, {"w": np.float32(3.0)}
    for step, decay in ((0, 0.999), (5, 0.999), (10_000, 0.9), (10_000, 0.999)):
        d = min(decay, (1 + step) / (10 + step))
        got = float(ema_update(ema, live, step, decay)["w"])
        assert got == pytest.approx(d * 1.0 + (1 - d) * 3.0, rel=1e-6), (step, decay)


@functools.cache
def _recomputed(steps: int) -> tuple[dict, dict]:
    """(the average, the live weights) after `steps` steps, recomputed from the live weights
    after each step."""
    config = helpers.tiny_config(optimizer__ema_decay=DECAY)
    if steps == 0:
        _, init = helpers.run_steps(config, 0)  # the init: the average's start
        return init, init
    expected, _ = _recomputed(steps - 1)
    _, live = helpers.run_steps(config, steps)
    d = min(DECAY, steps / (9 + steps))  # step t = steps - 1: (1 + t) / (10 + t)
    return {k: d * expected[k] + (1 - d) * live[k] for k in live}, live


@pytest.mark.slow
def test_training_keeps_the_average_of_the_live_weights(ema_run):
    """The EMA of a 4-step run recomputed from the live weights after each step."""
    assert ema_run[1].summary["steps"] == 4
    expected, live = _recomputed(4)
    got = helpers.flat_params(to_host(ema_run[1].state.ema))
    assert got.keys() == expected.keys()
    helpers.assert_params_close(got, expected, atol=1e-5, stats_rtol=1e-5)
    # and it is not the live weights
    assert helpers.max_param_difference(got, live) > 1e-4


@pytest.mark.slow
def test_best_checkpoint_and_load_bundle_hold_the_average(ema_run, tmp_path_factory):
    workdir, result = ema_run
    summary = result.summary
    with train_checkpoints.make_manager(workdir, read_only=True) as manager:
        step = summary["best_step"]
        saved = train_checkpoints._saved_tree(manager, step, "train")
    assert "live" in saved  # the optimiser's weights travel with the checkpoint, for resuming
    bundle = helpers.flat_params(checkpoints_loading.load_bundle(workdir).variables)
    best = helpers.flat_params(result.variables)
    assert all(np.array_equal(bundle[k], best[k]) for k in best)
    # whichever epoch was best, what it saved is the average at that step
    helpers.assert_params_close(best, _recomputed(step)[0], atol=1e-5, stats_rtol=1e-5)
    # validation ran on the average: the same run without one validates other weights
    plain = helpers.reference_run(tmp_path_factory)["summary"]["history"]
    assert [r["train_loss"] for r in result.summary["history"]] == pytest.approx(
        [r["train_loss"] for r in plain], rel=1e-4)
    assert all(abs(a["val_loss"] - b["val_loss"]) > 1e-4
               for a, b in zip(result.summary["history"], plain, strict=True))


@pytest.mark.slow
def test_preempted_run_resumes_the_average_exactly(ema_run, tmp_path):
    config = helpers.tiny_config(optimizer__ema_decay=DECAY)

    def preempt(step, batch):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler saves at the boundary
        return batch

    first = train_lib.train_and_evaluate(config, str(tmp_path), batch_hook=preempt)
    assert first.preempted
    resumed = train_lib.train_and_evaluate(config, str(tmp_path))
    _, reference = ema_run
    for tree in ("ema", "variables"):
        got = helpers.flat_params(to_host(getattr(resumed.state, tree)))
        want = helpers.flat_params(to_host(getattr(reference.state, tree)))
        assert all(np.array_equal(got[k], want[k]) for k in want), tree
    assert [r["val_loss"] for r in resumed.summary["history"]] == \
        [r["val_loss"] for r in reference.summary["history"]]


@pytest.mark.slow
def test_resuming_with_the_other_setting_names_the_key(ema_run, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(ema_run[0], workdir)
    with pytest.raises(CheckpointError, match=r"config\.optimizer\.ema_decay"):
        train_lib.train_and_evaluate(helpers.tiny_config(num_epochs=3), str(workdir))
