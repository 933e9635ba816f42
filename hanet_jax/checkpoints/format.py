"""The checkpoint format on disk: Orbax arrays plus a small JSON that says how to rebuild the model.

Every checkpoint directory holds `DIR/hanet.json` (`read_meta`, `write_meta`), whose "kind" says
what else it holds:
- "variables" (an exported or ported HA-Net) and "encoder" (a ported ImageNet DenseNet-121):
  `DIR/variables/`, an Orbax StandardCheckpointer tree `{"params", "batch_stats"}`
  (`save_variables`, `restore_variables`);
- "workdir" (a training run): `DIR/checkpoints/`, an Orbax CheckpointManager (`training.py`).
`loading.py` turns any of them into variables or a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from hanet_jax.json_files import write_json

META_FILE = "hanet.json"
VARIABLES_DIR = "variables"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint directory that cannot be used; the message names the path."""


def write_meta(directory: str | os.PathLike, *, kind: str, model_cfg: Mapping[str, Any],
               image_size, **extra) -> None:
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "model": dict(model_cfg),
            "image_size": [int(s) for s in image_size], **extra}
    write_json(Path(directory) / META_FILE, meta, sort_keys=True)  # atomic: never half a file


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
