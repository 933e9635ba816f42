"""The one loader behind every `--checkpoint DIR`, `init_from` and ensemble member.

`load_variables(DIR)` gives `{"params", "batch_stats"}` of any checkpoint kind (format.py): an
exported or ported HA-Net, a ported encoder, a training workdir's best step, or one step of a
workdir (`WORKDIR/checkpoints/<step>`: what to give when the best is damaged; the error that says
so lists the steps). `load_bundle(DIR)` also rebuilds the model `hanet.json` describes, for
inference.
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn

from hanet_jax import storage
from hanet_jax.checkpoints.format import META_FILE, CheckpointError, read_meta, restore_variables
from hanet_jax.checkpoints.training import restore_best_variables, restore_step_variables
from hanet_jax.models.architectures import model_from_config

MODEL_KINDS = ("variables", "workdir")   # a whole HA-Net
KINDS = (*MODEL_KINDS, "encoder")        # "encoder": a ported ImageNet DenseNet-121


@dataclasses.dataclass
class Bundle:
    """Everything inference needs: the module, its variables and the input size it expects."""

    model: nn.Module  # HA-Net or a baseline (models/architectures.py)
    variables: dict
    image_size: tuple[int, int]
    meta: dict


def _kind(directory: str | os.PathLike, meta: dict, kinds) -> str:
    kind = meta.get("kind")
    if kind not in kinds:
        raise CheckpointError(f"{storage.path(directory) / META_FILE}: unknown checkpoint kind {kind!r}")
    return kind


def load_variables(directory: str | os.PathLike, *, meta: dict | None = None, kinds=KINDS) -> dict:
    """{"params", "batch_stats"} of the checkpoint at `directory`; errors name the path."""
    meta = read_meta(directory) if meta is None else meta
    if _kind(directory, meta, kinds) == "workdir":
        if "step" in meta:  # WORKDIR/checkpoints/<step> (format.read_meta)
            return restore_step_variables(meta["workdir"], int(meta["step"]))
        return restore_best_variables(directory)
    return restore_variables(directory)


def load_bundle(directory: str | os.PathLike) -> Bundle:
    """Rebuild the model and restore its variables from an exported checkpoint or a workdir."""
    meta = read_meta(directory)
    try:
        model = model_from_config(meta["model"])
        image_size = tuple(meta["image_size"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{storage.path(directory) / META_FILE}: bad model description: {e}") from e
    _kind(directory, meta, MODEL_KINDS)
    return Bundle(model, load_variables(directory, meta=meta, kinds=MODEL_KINDS), image_size, meta)
