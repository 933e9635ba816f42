"""The checkpoint format on disk: Orbax arrays plus a small JSON that says how to rebuild the model.

Every checkpoint directory holds `DIR/hanet.json` (`read_meta`, `write_meta`), whose "kind" says
what else it holds:
- "variables" (an exported or ported HA-Net) and "encoder" (a ported ImageNet DenseNet-121):
  `DIR/variables/`, an Orbax StandardCheckpointer tree `{"params", "batch_stats"}`
  (`save_variables`, `restore_variables`);
- "workdir" (a training run): `DIR/checkpoints/`, an Orbax CheckpointManager (`training.py`).
A step directory of a workdir, `WORKDIR/checkpoints/<step>`, is a checkpoint too: it has no
`hanet.json` of its own, and `read_meta` gives the workdir's with "step" and "workdir" added, so
every `--checkpoint DIR` (and `config.init_from`) can name an older step when the best is damaged.
`DIR/checksums.json` (`save_variables`, since checksums exist): a CRC-32 of every array of
`DIR/variables/` (checksums.py), checked by `restore_variables` when present.
`loading.py` turns any of them into variables or a model. A directory may be local or in a
bucket (`gs://...`): every path goes through `hanet_jax.storage`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from hanet_jax import storage
from hanet_jax.checkpoints import checksums
from hanet_jax.json_files import write_json

META_FILE = "hanet.json"
VARIABLES_DIR = "variables"
CHECKPOINTS_DIR = "checkpoints"
CHECKSUMS_FILE = "checksums.json"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint directory that cannot be used; the message names the path."""


def quiet_abandoned_reads() -> None:
    """Called before a restore. When one read fails, Orbax gives up: it closes its event loop
    while TensorStore still completes the other reads it started, and leaves their coroutines
    and tasks behind. Python then prints a traceback for each, before, after or long after our
    one-line error or warning: through `sys.unraisablehook` ("Event loop is closed" from the
    reads' callbacks; Orbax's re-raise of the GeneratorExit that closes an abandoned read
    coroutine, with a whole TensorStore spec) and through asyncio's logger ("Task exception was
    never retrieved" for the other failed reads of the same item). Those, and only those, are
    dropped from then on; every other unraisable exception or asyncio error is reported as
    before."""
    previous = sys.unraisablehook
    if getattr(previous, "hanet_quiets_abandoned_reads", False):
        return

    def hook(unraisable):
        if not _abandoned_read(unraisable):
            previous(unraisable)

    hook.hanet_quiets_abandoned_reads = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_AbandonedReadTasks())


def _abandoned_read(unraisable) -> bool:
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)  # a coroutine's code
    return (isinstance(error.__cause__, GeneratorExit) or isinstance(error, GeneratorExit)) \
        and "/orbax/" in getattr(code, "co_filename", "")


class _AbandonedReadTasks(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" (a task, a gather) for Orbax's own
    futures: the message or the exception's traceback is in Orbax's code."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "exception was never retrieved" not in message:
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not ("/orbax/" in message or _raised_in_orbax(error))


def _raised_in_orbax(error: BaseException | None) -> bool:
    """Whether any frame of `error`'s traceback, or of its causes', is in Orbax's code."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            if "/orbax/" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return False


def write_meta(directory: str | os.PathLike, *, kind: str, model_cfg: Mapping[str, Any],
               image_size, **extra) -> None:
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "model": dict(model_cfg),
            "image_size": [int(s) for s in image_size], **extra}
    write_json(storage.path(directory) / META_FILE, meta, sort_keys=True)  # atomic: never half a file


def read_meta(directory: str | os.PathLike) -> dict:
    path = storage.path(directory) / META_FILE
    if not path.parent.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.is_file():
        step_meta = _workdir_step_meta(path.parent)
        if step_meta is not None:
            return step_meta
        raise CheckpointError(f"{directory} is not a hanet-jax checkpoint: {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    return meta


def _workdir_step_meta(directory: epath.Path) -> dict | None:
    """For a step directory WORKDIR/checkpoints/<step> of a training workdir: the workdir's
    meta plus "step" and "workdir" (the model is the workdir's); None for anything else."""
    workdir = directory.parent.parent
    if not (directory.name.isdigit() and directory.parent.name == CHECKPOINTS_DIR
            and (workdir / META_FILE).is_file()):
        return None
    meta = read_meta(workdir)
    if meta.get("kind") != "workdir":
        return None
    return {**meta, "step": int(directory.name), "workdir": os.fspath(workdir)}


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any], *, model_cfg: Mapping[str, Any],
                   image_size, **extra) -> epath.Path:
    """Write `{"params", "batch_stats"}` and the model description to `directory`."""
    directory = storage.path(directory)
    target = directory / VARIABLES_DIR
    if target.exists():
        raise CheckpointError(f"{target} already exists; choose an empty --out directory")
    tree = jax.device_get({"params": variables["params"],
                           "batch_stats": variables.get("batch_stats", {})})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, tree)
    write_json(directory / CHECKSUMS_FILE, {"algorithm": checksums.ALGORITHM,
                                            "arrays": {VARIABLES_DIR: checksums.tree_checksums(tree)}})
    write_meta(directory, kind="variables", model_cfg=model_cfg, image_size=image_size, **extra)
    return directory


def restore_variables(directory: str | os.PathLike) -> dict:
    """`DIR/variables`, checked against `DIR/checksums.json` when there is one."""
    target = storage.path(directory) / VARIABLES_DIR
    if not target.is_dir():
        raise CheckpointError(f"{target} is missing: the checkpoint is incomplete")
    quiet_abandoned_reads()
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(target)
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
        raise CheckpointError(f"{target}: cannot restore the variables ({type(e).__name__}: {e})") from e
    problem = checksums.first_mismatch(variables, _saved_checksums(target.parent))
    if problem:
        raise CheckpointError(f"{target}: {problem}")
    return variables


def _saved_checksums(directory: epath.Path) -> dict:
    """The variables' entries of DIR/checksums.json; {} when the checkpoint predates them."""
    path = directory / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
        return dict(saved["arrays"][VARIABLES_DIR])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
