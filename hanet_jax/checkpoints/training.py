"""Training checkpoints: one Orbax CheckpointManager at WORKDIR/checkpoints.

Layout of a step directory `WORKDIR/checkpoints/<step>/` (step = training steps done):
- `variables/`: {"params", "batch_stats"} (what inference and `restore_best_variables` read:
  the weights' moving average when the run keeps one, config.optimizer.ema_decay > 0);
- `train/`: {"step", "opt_state", "plateau", "rng"} (the rest of the device state), and with
  an EMA {"live": {"params", "batch_stats"}}, the weights the optimiser updates;
- `meta/`: JSON: data position (epoch, step, steps_per_epoch), early-stopping state, the
  per-epoch history, the running training metrics of an unfinished epoch, wall time;
- `metrics/`: Orbax's metrics of epoch-end checkpoints: val_loss, val_dice, improved, epoch;
- `checksums/`: JSON {"algorithm": "crc32", "arrays": {"variables": {path: {"dtype", "shape",
  "crc32"}}, "train": {...}}}, one entry per array (checksums.py), checked after every restore:
  a flipped bit that still decompresses is caught there. Checkpoints written before it existed
  have none and restore unchecked.

Which steps are kept, by one manager and one preservation policy (AnyPreservationPolicy):
- LatestN(keep_latest): the newest, to resume (two by default, so one damaged file still
  leaves a step to fall back to);
- BestN(keep_best) by `best_metric`: val_loss for checkpoints where EarlyStopping saw an
  improvement, +inf otherwise. So "best" is Keras' restore_best_weights choice (an improvement
  must beat the best by early_stopping_min_delta), not merely the lowest val_loss, and
  `best_step()` names the same checkpoint. Mid-epoch saves (preemption, every_steps) have
  no metrics and are kept only while they are among the newest.
One manager rather than a second "best" manager: every checkpoint is a full, resumable state,
the best costs no extra write, and Orbax's atomic step directories (written as
`<step>.orbax-checkpoint-tmp*` and renamed when complete) protect both roles at once.
Saves are asynchronous: training continues while a background thread writes.

Damage (a bit flip, a truncated file, a garbled `_METADATA`): resuming (`restore_latest`) tries
the steps newest first, warns in one line for each that does not restore, renames those to
`<step>.unreadable` (kept, but no longer listed, so the run can save those steps again) and
resumes from the newest that restores. Reading one step's weights (`restore_best_variables`,
`restore_step_variables`) fails with one line that names the step directory and the other steps
the workdir holds; any of them can be given as the checkpoint (`WORKDIR/checkpoints/<step>`,
format.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from hanet_jax import storage
from hanet_jax.checkpoints import checksums
from hanet_jax.checkpoints.format import CHECKPOINTS_DIR, CheckpointError, quiet_abandoned_reads

CHECKSUMS_ITEM = "checksums"
UNREADABLE_SUFFIX = ".unreadable"
_REASON_CHARS = 400  # a reason longer than this is cut: the warning and the error stay one line


class _SettingMismatch(CheckpointError):
    """The checkpoint is readable but was saved under another setting: no older step helps."""


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


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
    """WORKDIR/checkpoints, local or in a bucket (`hanet_jax.storage`)."""
    return storage.path(workdir) / CHECKPOINTS_DIR


def step_dir(manager: ocp.CheckpointManager, step: int) -> epath.Path:
    return storage.path(manager.directory) / str(step)


def make_manager(workdir: str | os.PathLike, *, keep_latest: int = 2, keep_best: int = 1,
                 async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    """The manager of WORKDIR/checkpoints. Leftover temporary (incomplete) step directories of
    a run killed while saving are removed when a writable manager opens.

    Orbax reads every step's metrics file as it opens and stops at a garbled one, so those are
    looked at first: a writable manager sets such steps aside (`<step>.unreadable`, with a
    warning), a read-only one raises one CheckpointError line naming the file."""
    directory = checkpoint_dir(workdir)
    damaged = _damaged_metrics(directory)
    if damaged and read_only:
        step, reason = damaged[0]
        raise CheckpointError(f"{reason}: Orbax cannot open {directory} while it is there; move "
                              f"{directory / str(step)} out of the way (e.g. to {directory / str(step)}"
                              f"{UNREADABLE_SUFFIX}) to use the other steps")
    for step, reason in damaged:
        logging.warning("checkpoint %s is unreadable (%s); setting it aside",
                        directory / str(step), reason)
    if damaged:
        moved = _rename_aside(directory, [step for step, _ in damaged])
        logging.warning("set aside as %s", ", ".join(str(p) for p in moved))
    return ocp.CheckpointManager(directory,
                                 options=_options(keep_latest, keep_best, async_save, read_only))


def _damaged_metrics(directory: epath.Path) -> list[tuple[int, str]]:
    """(step, reason), newest first, for each step directory whose Orbax metrics file (the
    ranking of the best) is not valid JSON."""
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        file = path / "metrics" / "metrics"
        if not (path.name.isdigit() and file.is_file()):
            continue
        try:
            json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError, OSError) as e:
            found.append((int(path.name), f"{file} is not valid JSON ({type(e).__name__})"))
    return sorted(found, reverse=True)


def _split(state) -> tuple[dict, dict]:
    train = {"step": state.step, "opt_state": state.opt_state, "plateau": state.plateau,
             "rng": state.rng}
    if state.ema is not None:
        train["live"] = state.variables
    return state.eval_variables, train


def save(manager: ocp.CheckpointManager, state, meta: Mapping, metrics: Mapping | None = None
         ) -> None:
    """Starts an (asynchronous) save of the full state at step = meta["step"], with the
    checksum of every array (hashed now, before the next step can donate the buffers)."""
    variables, train = _split(state)
    sums = {"algorithm": checksums.ALGORITHM,
            "arrays": {"variables": checksums.tree_checksums(variables),
                       "train": checksums.tree_checksums(train)}}
    manager.save(int(meta["step"]), args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(dict(meta)), **{CHECKSUMS_ITEM: ocp.args.JsonSave(sums)}),
        metrics=dict(metrics) if metrics else None, force=True)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def describe(error: BaseException) -> str:
    """Why a checkpoint did not restore, in one line: our own message, or the root cause of an
    Orbax/TensorStore error (the first exception Python's traceback would show, its first line:
    Orbax wraps TensorStore's one-line reason in a message that prints a whole TensorStore spec)."""
    if isinstance(error, CheckpointError):
        text = str(error)
    else:
        root, seen = error, {id(error)}
        while True:
            inner = root.__cause__ if root.__cause__ is not None else (
                None if root.__suppress_context__ else root.__context__)
            if inner is None or id(inner) in seen:
                break
            root = inner
            seen.add(id(root))
        lines = [line.strip() for line in str(root).splitlines() if line.strip()]
        text = f"{type(root).__name__}: {lines[0] if lines else ''}"
    text = re.sub(r"\s*\[source locations=.*$", "", " ".join(text.split()))
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def _saved_checksums(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The `checksums` item of `step`, or None for a checkpoint that predates them."""
    path = step_dir(manager, step) / CHECKSUMS_ITEM
    if not path.is_dir():
        return None
    try:
        saved = manager.restore(step, args=ocp.args.Composite(
            **{CHECKSUMS_ITEM: ocp.args.JsonRestore()}))[CHECKSUMS_ITEM]
        return dict(saved["arrays"])
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
        raise CheckpointError(f"{path} is unreadable ({describe(e)})") from e


def _verify(saved: dict | None, item: str, tree) -> None:
    """Raises CheckpointError naming the first array of `item` that differs from its checksum."""
    problem = checksums.first_mismatch(tree, (saved or {}).get(item) or {})
    if problem:
        raise CheckpointError(f"{item}: {problem}")


def _other_steps(manager: ocp.CheckpointManager, step: int) -> str:
    """The rest of an error about `step`: the other steps of the workdir, each of which can be
    given as the checkpoint instead."""
    others = [s for s in sorted(manager.all_steps(), reverse=True) if s != step]
    if not others:
        return f"it is the only checkpoint in {manager.directory}"
    listed = ", ".join(str(s) for s in others)
    return (f"{manager.directory} also holds step{'s' if len(others) > 1 else ''} {listed}: give "
            f"{step_dir(manager, others[0])} (or another step's directory) as the checkpoint")


def restore_latest(manager: ocp.CheckpointManager, like_state):
    """(state, meta) from the newest checkpoint that restores, placed like `like_state`; or None
    when there is none.

    A step that does not restore (any Orbax/TensorStore error, a bad `_METADATA`, a checksum
    mismatch) gets a one-line warning naming it and the reason, and the previous step is tried.
    Once one restores, the unreadable newer ones are renamed `<step>.unreadable` (see
    `_rename_aside`). If none restores: CheckpointError naming the workdir's checkpoints."""
    unreadable = []
    quiet_abandoned_reads()
    steps = sorted(manager.all_steps(), reverse=True)
    for i, step in enumerate(steps):
        try:
            restored = _restore_state(manager, step, like_state)
        except _SettingMismatch:
            raise
        except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
            logging.warning("checkpoint %s is unreadable (%s); %s", step_dir(manager, step),
                            describe(e), f"trying step {steps[i + 1]}" if i + 1 < len(steps)
                            else "no older step is left")
            unreadable.append(step)
            continue
        if unreadable:
            moved = _rename_aside(storage.path(manager.directory), unreadable)
            manager.reload()
            logging.warning("resuming from step %d, the newest checkpoint that restores; the "
                            "unreadable %s set aside as %s", step,
                            "step" if len(moved) == 1 else "steps",
                            ", ".join(str(p) for p in moved))
        return restored
    if unreadable:
        raise CheckpointError(
            f"{manager.directory}: none of its checkpoints restores (steps "
            f"{', '.join(str(s) for s in unreadable)}; the warnings above say why); move the "
            "folder away to start afresh, or use a new workdir")
    return None


def _restore_state(manager: ocp.CheckpointManager, step: int, like_state):
    """(state, meta) of checkpoint `step`, checked against its checksums; raises on damage."""
    variables, train = _split(like_state)
    saved_ema = "live" in _saved_tree(manager, step, "train")
    _saved_tree(manager, step, "variables")  # what eval.py reads: unreadable there, no resume
    if saved_ema != ("live" in train):
        raise _SettingMismatch(
            f"{step_dir(manager, step)}: saved {'with' if saved_ema else 'without'}"
            f" a weights' moving average, and config.optimizer.ema_decay="
            f"{'0' if saved_ema else 'a positive value'} asks for the opposite; resume with the "
            "run's own setting or use a new workdir")
    saved = _saved_checksums(manager, step)
    out = manager.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(_abstract(variables)),
        train=ocp.args.StandardRestore(_abstract(train)), meta=ocp.args.JsonRestore()))
    _verify(saved, "variables", out.variables)
    _verify(saved, "train", out.train)
    rest = dict(out.train)
    live = rest.pop("live", None)
    if live is None:
        state = like_state.replace(params=out.variables["params"],
                                   batch_stats=out.variables["batch_stats"], **rest)
    else:
        state = like_state.replace(params=live["params"], batch_stats=live["batch_stats"],
                                   ema=dict(out.variables), **rest)
    return state, dict(out.meta)


def _rename_aside(directory: epath.Path, steps) -> list[epath.Path]:
    """Renames the step directories of `steps` to `<step>.unreadable` (`-1`, `-2`, ... when
    taken). Orbax then no longer lists them, so the resumed run can save those steps again,
    and nothing is deleted: what a transient read error made unreadable can still be copied
    back. Process 0 renames, the others wait for it."""
    moved = []
    for step in steps:
        source = directory / str(step)
        target, k = source.with_name(f"{step}{UNREADABLE_SUFFIX}"), 0
        while target.exists():
            k += 1
            target = source.with_name(f"{step}{UNREADABLE_SUFFIX}-{k}")
        if jax.process_index() == 0:
            source.rename(target)
        moved.append(target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("hanet_jax: unreadable checkpoints set aside")
    return moved


def _best_or_latest(manager: ocp.CheckpointManager) -> int:
    step = manager.best_step()
    if step is None or not math.isfinite(best_metric(manager.metrics(step) or {})):
        step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"{manager.directory} holds no complete checkpoint")
    return step


def restore_best(manager: ocp.CheckpointManager, like_variables=None) -> tuple[int, dict]:
    """(step, {"params", "batch_stats"}) of the best checkpoint (the latest if none is ranked).

    No fall-back to another step: the best is what the user asked for, so a damaged one is an
    error (one line, naming the step directory and the steps that can be used instead)."""
    step = _best_or_latest(manager)
    return step, _restore_variables(manager, step, like_variables)


def _restore_variables(manager: ocp.CheckpointManager, step: int, like_variables=None) -> dict:
    """{"params", "batch_stats"} of checkpoint `step`, checked against its checksums; any
    failure is one CheckpointError line that names the step directory and the other steps."""
    quiet_abandoned_reads()
    try:
        like = _abstract(like_variables) if like_variables else _on_one_device(manager, step)
        saved = _saved_checksums(manager, step)
        variables = dict(manager.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(like))).variables)
        _verify(saved, "variables", variables)
        return variables
    except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
        raise CheckpointError(f"{step_dir(manager, step)} is unreadable ({describe(e)}); "
                              f"{_other_steps(manager, step)}") from e


def _saved_tree(manager: ocp.CheckpointManager, step: int, item: str):
    """The metadata tree of one saved item ("variables" | "train") of checkpoint `step`."""
    path = step_dir(manager, step) / item
    try:
        with ocp.StandardCheckpointer() as reader:
            metadata = reader.metadata(path).item_metadata
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
        raise CheckpointError(f"{path}: cannot read the saved {item} ({describe(e)})") from e
    if metadata is None:  # what Orbax returns, with a warning, when it cannot read it
        raise CheckpointError(_metadata_problem(path, item))
    return metadata.tree


def _metadata_problem(path: epath.Path, item: str) -> str:
    """Why Orbax found no metadata for an item: it logs the cause and returns None."""
    file = path / "_METADATA"
    if not file.is_file():
        return f"{file} is missing"
    try:
        json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return f"{file} is not valid JSON ({type(e).__name__})"
    return (f"{path}: Orbax cannot read the metadata of the saved {item} (its _METADATA is "
            "valid JSON: the OCDBT manifest may be damaged)")


def _on_one_device(manager: ocp.CheckpointManager, step: int):
    """The saved variables' shapes, placed on this process's first device: a run may have saved
    them over another set of devices (e.g. the CPU split in two by train.py) than eval.py has."""
    saved = _saved_tree(manager, step, "variables")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)


def _open_read_only(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is missing: {workdir} has no training checkpoints")
    return make_manager(workdir, read_only=True)


def restore_best_variables(workdir: str | os.PathLike) -> dict:
    """{"params", "batch_stats"} of a training workdir's best checkpoint (for `load_bundle`).

    Needs nothing but the workdir: the ranking is read from the checkpoints' own metrics.
    """
    with _open_read_only(workdir) as manager:
        return restore_best(manager)[1]


def restore_step_variables(workdir: str | os.PathLike, step: int) -> dict:
    """{"params", "batch_stats"} of one step of a training workdir (`--checkpoint
    WORKDIR/checkpoints/<step>`): the way to use an older step when the best is damaged."""
    with _open_read_only(workdir) as manager:
        if step not in manager.all_steps():
            steps = ", ".join(str(s) for s in sorted(manager.all_steps(), reverse=True))
            raise CheckpointError(f"{step_dir(manager, step)} is not a complete checkpoint; "
                                  f"{manager.directory} holds steps {steps or 'none'}")
        return _restore_variables(manager, step)


class Preemption:
    """While entered (main thread only), SIGTERM or SIGINT asks the trainer to save at the next
    step boundary and stop, instead of killing the process; the old handlers are restored.

    One process: our handlers record the signal. Several (jax.distributed): JAX's preemption
    notifier already catches SIGTERM in every process, so we leave SIGTERM to it, and our SIGINT
    handler passes a Ctrl-C on as a SIGTERM to this process; at every step each process asks
    `multihost_utils.reached_preemption_sync_point(step)`, which the coordination service makes
    true on all processes at the same step, with no gather of our own. `exit_status` is the
    shell's status for the signal (143 SIGTERM, 130 SIGINT): non-zero, so a restarting scheduler
    reruns the command, which resumes.
    """

    EXIT_STATUS = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}
        self._several = False

    def __enter__(self):
        self._several = jax.process_count() > 1
        if threading.current_thread() is threading.main_thread():
            mine = (signal.SIGINT,) if self._several else (signal.SIGTERM, signal.SIGINT)
            self._previous = {s: signal.signal(s, self._handle) for s in mine}
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        logging.warning("%s: saving a checkpoint at the next step boundary", name)
        self.signal_name = self.signal_name or name
        if self._several and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's notifier tells every process

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)

    def reached(self, step: int) -> bool:
        """Whether to save at `step` and stop: the same answer in every process."""
        if not self._several:
            return self.signal_name is not None
        if multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"  # another process got it
            return True
        return False

    def arrived_in_one_process(self) -> bool:
        """A signal already recorded in a one-process run: where the trainer has just saved
        anyway (an epoch's end), it stops there rather than after one more step. Several
        processes decide only at `reached`, so that all stop at the same step."""
        return not self._several and self.signal_name is not None

    @property
    def exit_status(self) -> int:
        return self.EXIT_STATUS.get(self.signal_name or "SIGTERM")
