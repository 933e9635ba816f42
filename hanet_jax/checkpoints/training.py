"""Training checkpoints: one Orbax CheckpointManager at WORKDIR/checkpoints.

Layout of a step directory `WORKDIR/checkpoints/<step>/` (step = training steps done):
- `variables/`: {"params", "batch_stats"} (what inference and `restore_best_variables` read:
  the weights' moving average when the run keeps one, config.optimizer.ema_decay > 0);
- `train/`: {"step", "opt_state", "plateau", "rng"} (the rest of the device state), and with
  an EMA {"live": {"params", "batch_stats"}}, the weights the optimiser updates;
- `meta/`: JSON: data position (epoch, step, steps_per_epoch), early-stopping state, the
  per-epoch history, the running training metrics of an unfinished epoch, wall time;
- `metrics/`: Orbax's metrics of epoch-end checkpoints: val_loss, val_dice, improved, epoch.

Which steps are kept, by one manager and one preservation policy (AnyPreservationPolicy):
- LatestN(keep_latest): the newest, to resume;
- BestN(keep_best) by `best_metric`: val_loss for checkpoints where EarlyStopping saw an
  improvement, +inf otherwise. So "best" is Keras' restore_best_weights choice (an improvement
  must beat the best by early_stopping_min_delta), not merely the lowest val_loss, and
  `best_step()` names the same checkpoint. Mid-epoch saves (preemption, every_steps) have
  no metrics and are kept only while they are among the newest.
One manager rather than a second "best" manager: every checkpoint is a full, resumable state,
the best costs no extra write, and Orbax's atomic step directories (written as
`<step>.orbax-checkpoint-tmp*` and renamed when complete) protect both roles at once.
Saves are asynchronous: training continues while a background thread writes.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from hanet_jax.checkpoints.format import CHECKPOINTS_DIR, CheckpointError


def best_metric(metrics: Mapping[str, Any]) -> float:
    """Rank of an epoch-end checkpoint for `best_mode="min"`: its val_loss if early stopping
    counted it as an improvement, else +inf."""
    value = float(metrics.get("val_loss", math.inf))
    return value if metrics.get("improved") and math.isfinite(value) else math.inf


def _options(keep_latest: int, keep_best: int, async_save: bool, read_only: bool):
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep_latest),
        policies.BestN(get_metric_fn=best_metric, reverse=True, n=keep_best,
                       keep_checkpoints_without_metrics=False),
    ])
    return ocp.CheckpointManagerOptions(
        best_fn=best_metric, best_mode="min", preservation_policy=policy,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        read_only=read_only, create=not read_only)


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir).absolute() / CHECKPOINTS_DIR


def make_manager(workdir: str | os.PathLike, *, keep_latest: int = 1, keep_best: int = 1,
                 async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    """The manager of WORKDIR/checkpoints. Leftover temporary (incomplete) step directories of
    a run killed while saving are removed when a writable manager opens."""
    return ocp.CheckpointManager(checkpoint_dir(workdir),
                                 options=_options(keep_latest, keep_best, async_save, read_only))


def _split(state) -> tuple[dict, dict]:
    train = {"step": state.step, "opt_state": state.opt_state, "plateau": state.plateau,
             "rng": state.rng}
    if state.ema is not None:
        train["live"] = state.variables
    return state.eval_variables, train


def save(manager: ocp.CheckpointManager, state, meta: Mapping, metrics: Mapping | None = None
         ) -> None:
    """Starts an (asynchronous) save of the full state at step = meta["step"]."""
    variables, train = _split(state)
    manager.save(int(meta["step"]), args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(dict(meta))), metrics=dict(metrics) if metrics else None,
        force=True)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_latest(manager: ocp.CheckpointManager, like_state):
    """(state, meta) from the newest complete checkpoint, placed like `like_state`; or None."""
    step = manager.latest_step()
    if step is None:
        return None
    variables, train = _split(like_state)
    saved_ema = "live" in _saved_tree(manager, step, "train")
    if saved_ema != ("live" in train):
        raise CheckpointError(
            f"{Path(manager.directory) / str(step)}: saved {'with' if saved_ema else 'without'}"
            f" a weights' moving average, and config.optimizer.ema_decay="
            f"{'0' if saved_ema else 'a positive value'} asks for the opposite; resume with the "
            "run's own setting or use a new workdir")
    out = manager.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(_abstract(variables)),
        train=ocp.args.StandardRestore(_abstract(train)), meta=ocp.args.JsonRestore()))
    rest = dict(out.train)
    live = rest.pop("live", None)
    if live is None:
        state = like_state.replace(params=out.variables["params"],
                                   batch_stats=out.variables["batch_stats"], **rest)
    else:
        state = like_state.replace(params=live["params"], batch_stats=live["batch_stats"],
                                   ema=dict(out.variables), **rest)
    return state, dict(out.meta)


def restore_best(manager: ocp.CheckpointManager, like_variables=None) -> tuple[int, dict]:
    """(step, {"params", "batch_stats"}) of the best checkpoint (the latest if none is ranked)."""
    step = manager.best_step()
    if step is None or not math.isfinite(best_metric(manager.metrics(step) or {})):
        step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"{manager.directory} holds no complete checkpoint")
    like = _abstract(like_variables) if like_variables else _on_one_device(manager, step)
    target = ocp.args.StandardRestore(like)
    return step, dict(manager.restore(step, args=ocp.args.Composite(variables=target)).variables)


def _saved_tree(manager: ocp.CheckpointManager, step: int, item: str):
    """The metadata tree of one saved item ("variables" | "train") of checkpoint `step`."""
    path = Path(manager.directory) / str(step) / item
    try:
        with ocp.StandardCheckpointer() as reader:
            return reader.metadata(path).item_metadata.tree
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
        raise CheckpointError(f"{path}: cannot read the saved {item} ({type(e).__name__}: {e})") from e


def _on_one_device(manager: ocp.CheckpointManager, step: int):
    """The saved variables' shapes, placed on this process's first device: a run may have saved
    them over another set of devices (e.g. the CPU split in two by train.py) than eval.py has."""
    saved = _saved_tree(manager, step, "variables")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)


def restore_best_variables(workdir: str | os.PathLike) -> dict:
    """{"params", "batch_stats"} of a training workdir's best checkpoint (for `load_bundle`).

    Needs nothing but the workdir: the ranking is read from the checkpoints' own metrics.
    """
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is missing: {workdir} has no training checkpoints")
    with make_manager(workdir, read_only=True) as manager:
        return restore_best(manager)[1]


class Preemption:
    """While entered (main thread only), SIGTERM sets `requested` instead of killing the process;
    the trainer checks it at step boundaries, saves and returns. The old handler is restored."""

    def __init__(self):
        self.requested, self._previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint at the next step boundary")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_process(self) -> bool:
        """Whether any process got SIGTERM (a collective when there are several processes)."""
        if jax.process_count() == 1:
            return self.requested
        return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))
