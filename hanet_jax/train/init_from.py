"""`config.init_from`: start training from a checkpoint's weights (all of them, or the encoder's).

The source is read with the one loader (`checkpoints.loading.load_variables`): a ported ImageNet
encoder, an exported HA-Net, another run's workdir (its best step) or one of its steps
(`WORKDIR/checkpoints/<step>`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from hanet_jax.checkpoints.format import CheckpointError, read_meta
from hanet_jax.checkpoints.loading import load_variables
from hanet_jax.train.sharding import replicate, to_host
from hanet_jax.train.state import TrainState


def resolve_model_config(model_cfg: Mapping[str, Any], init_from: str) -> dict:
    """The model fields with `input_normalization="auto"` resolved, and the encoder's BatchNorm
    epsilon taken from the `init_from` checkpoint (it belongs to the weights: torchvision's is 1e-5).

    "auto" means what the `init_from` weights were trained with: ImageNet mean/std for an
    ImageNet encoder checkpoint, the recorded setting of an HA-Net checkpoint or workdir (a
    fine-tuned model keeps its preprocessing), and none without `init_from` (the release's raw
    [0, 1] input).
    """
    cfg = dict(model_cfg)
    meta = read_meta(init_from) if init_from else {}
    source = meta.get("model", {}) if isinstance(meta.get("model"), dict) else {}
    if cfg.get("input_normalization") == "auto":
        inherited = source.get("input_normalization", "none")
        cfg["input_normalization"] = "none" if inherited == "auto" else inherited
    if "encoder_epsilon" in source:
        cfg["encoder_epsilon"] = source["encoder_epsilon"]
    return cfg


def _flat(tree: Mapping) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()} if tree else {}


def _describe_mismatch(target: dict, source: dict, where: str) -> list[str]:
    problems = []
    missing = sorted(set(target) - set(source))
    extra = sorted(set(source) - set(target))
    shapes = sorted(k for k in set(target) & set(source)
                    if tuple(np.shape(target[k])) != tuple(np.shape(source[k])))
    for label, keys in (("missing from the checkpoint", missing),
                        ("not in the model", extra)):
        if keys:
            shown = ", ".join(f"{where}/{k}" for k in keys[:8])
            problems.append(f"{len(keys)} {label}: {shown}{' ...' if len(keys) > 8 else ''}")
    for k in shapes[:8]:
        problems.append(f"shape of {where}/{k}: model {tuple(np.shape(target[k]))}, checkpoint "
                        f"{tuple(np.shape(source[k]))}")
    if len(shapes) > 8:
        problems.append(f"... and {len(shapes) - 8} more shape mismatches")
    return problems


def merge_init(target: Mapping, source: Mapping, scope: str, source_name: str) -> dict:
    """`target` {"params", "batch_stats"} with the `scope` part replaced by `source`'s values.

    scope "all": source must hold the whole model, same paths and shapes.
    scope "encoder": only params["encoder"] and batch_stats["encoder"] are taken; the source may
    be a whole HANet tree or an encoder-only tree ({"params": {"encoder": ...}, ...}).
    Raises CheckpointError naming each mismatched path. Values are cast to the target dtypes.
    """
    if scope not in ("all", "encoder"):
        raise ValueError(f"config.init_scope must be 'all' or 'encoder', got {scope!r}")
    out, problems = {}, []
    for collection in ("params", "batch_stats"):
        tgt = dict(target.get(collection) or {})
        src = dict(source.get(collection) or {})
        if scope == "encoder":
            if "encoder" not in src and tgt.get("encoder"):
                problems.append(f"{collection}/encoder is missing (top-level keys: "
                                f"{sorted(src) or 'none'})")
                continue
            tgt_part, src_part = tgt.get("encoder", {}), src.get("encoder", {})
            where = f"{collection}/encoder"
        else:
            tgt_part, src_part, where = tgt, src, collection
        t, s = _flat(tgt_part), _flat(src_part)
        found = _describe_mismatch(t, s, where)
        if found:
            problems += found
            continue
        merged = {k: np.asarray(s[k]).astype(np.asarray(v).dtype) for k, v in t.items()}
        merged = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in merged.items()})
        if scope == "encoder":
            tgt = {**tgt, "encoder": merged} if merged else tgt
            out[collection] = tgt
        else:
            out[collection] = merged
    if problems:
        hint = ""
        if scope == "all" and set(source.get("params", {})) == {"encoder"}:
            hint = "\n  (the checkpoint holds an encoder only: use config.init_scope=encoder)"
        raise CheckpointError(f"config.init_from={source_name} does not fit the model "
                              f"(config.init_scope={scope}):\n  " + "\n  ".join(problems) + hint)
    return out


def apply_init_from(state: TrainState, directory: str, scope: str, mesh: Mesh) -> TrainState:
    """The state with params/batch_stats (all, or the encoder's) loaded from `directory`; an
    EMA restarts from the loaded weights. A damaged checkpoint is one CheckpointError line that
    names it and the steps that can be given instead (train.py reports it, no traceback)."""
    try:
        source = load_variables(directory)
    except CheckpointError as e:
        raise CheckpointError(f"config.init_from={directory}: {e}") from e
    merged = merge_init(to_host(state.variables), source, scope, directory)
    merged = replicate(merged, mesh)
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"],
                         ema=None if state.ema is None else merged)
