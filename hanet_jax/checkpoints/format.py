"""Model checkpoints on disk: Orbax arrays plus a small JSON that says how to rebuild the model.

Two kinds of directory are accepted wherever a `--checkpoint DIR` is taken:
- an exported/ported checkpoint: `DIR/hanet.json` (kind "variables") and `DIR/variables/`
  (an Orbax StandardCheckpointer tree `{"params", "batch_stats"}`);
- a training workdir: `DIR/hanet.json` (kind "workdir") and `DIR/checkpoints/`, an Orbax
  CheckpointManager whose best step (by validation loss) is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from hanet_jax.models.hanet import HANet, model_from_config

META_FILE = "hanet.json"
VARIABLES_DIR = "variables"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint directory that cannot be used; the message names the path."""


@dataclasses.dataclass
class Bundle:
    """Everything inference needs: the module, its variables and the input size it expects."""

    model: HANet
    variables: dict
    image_size: tuple[int, int]
    meta: dict


def write_meta(directory: str | os.PathLike, *, kind: str, model_cfg: Mapping[str, Any],
               image_size, **extra) -> None:
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "model": dict(model_cfg),
            "image_size": [int(s) for s in image_size], **extra}
    path = Path(directory) / META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a hanet-jax checkpoint: {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    return meta


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any], *, model_cfg: Mapping[str, Any],
                   image_size, **extra) -> Path:
    """Write `{"params", "batch_stats"}` and the model description to `directory`."""
    directory = Path(directory).absolute()
    target = directory / VARIABLES_DIR
    if target.exists():
        raise CheckpointError(f"{target} already exists; choose an empty --out directory")
    tree = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, jax.device_get(tree))
    write_meta(directory, kind="variables", model_cfg=model_cfg, image_size=image_size, **extra)
    return directory


def restore_variables(directory: str | os.PathLike) -> dict:
    target = Path(directory).absolute() / VARIABLES_DIR
    if not target.is_dir():
        raise CheckpointError(f"{target} is missing: the checkpoint is incomplete")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(target)
    except Exception as e:  # noqa: BLE001 - Orbax raises many kinds; name the directory
        raise CheckpointError(f"{target}: cannot restore the variables ({type(e).__name__}: {e})") from e


def load_bundle(directory: str | os.PathLike) -> Bundle:
    """Rebuild the model and restore its variables from an exported checkpoint or a workdir."""
    meta = read_meta(directory)
    try:
        model = model_from_config(meta["model"])
        image_size = tuple(meta["image_size"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{Path(directory) / META_FILE}: bad model description: {e}") from e
    kind = meta.get("kind")
    if kind == "variables":
        variables = restore_variables(directory)
    elif kind == "workdir":
        from hanet_jax.checkpoints.training import restore_best_variables  # trainer-side layout

        variables = restore_best_variables(directory)
    else:
        raise CheckpointError(f"{Path(directory) / META_FILE}: unknown checkpoint kind {kind!r}")
    return Bundle(model, variables, image_size, meta)
