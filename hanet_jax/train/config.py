"""Checks a training config before any work: every key known, every value valid.

Each error names the key as `config.section.key`. The rules below are the schema: a config must
hold exactly these keys (hanet_jax/train/recipes.py defines them, with their defaults and meaning).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from absl import logging
from flax import traverse_util

from hanet_jax.data.audit import GROUP_BY, RELEASES
from hanet_jax.data.layouts import LAYOUTS
from hanet_jax.data.splits import METHODS as VAL_SPLITS
from hanet_jax.train.losses import LOSS_NAMES
from hanet_jax.models.architectures import ARCHITECTURES, model_from_config
from hanet_jax.models.hanet import DTYPES, VARIANTS
from hanet_jax.train.init_from import resolve_model_config
from hanet_jax import storage
from hanet_jax.json_files import read_json, to_jsonable, write_json


class ConfigError(ValueError):
    """A config key that is unknown, missing or holds a bad value; the message names it."""


Check = Callable[[Any], str | None]  # returns a complaint, or None when the value is fine


def _choice(*options) -> Check:
    return lambda v: None if v in options else f"must be one of {options}, got {v!r}"


def _bool(v) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _str(v) -> str | None:
    return None if isinstance(v, str) else f"must be a string, got {v!r}"


def _int(low: int | None = None) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if low is not None and v < low:
            return f"must be >= {low}, got {v}"
        return None
    return check


def _float(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number, got {v!r}"
        if low is not None and (v <= low if open_low else v < low):
            return f"must be {'>' if open_low else '>='} {low}, got {v}"
        if high is not None and (v >= high if open_high else v > high):
            return f"must be {'<' if open_high else '<='} {high}, got {v}"
        return None
    return check


def _image_size(v) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 32 or v % 32:
        return f"must be a positive multiple of 32 (the encoder downsamples by 32), got {v!r}"
    return None


def _profile_steps(v) -> str | None:
    if v == "":
        return None
    parts = str(v).split(",") if isinstance(v, str) else []
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts) and int(parts[1]) > 0:
        return None
    return f"must be '' (off) or 'START,COUNT' with COUNT >= 1, got {v!r}"


def _layer_counts(v) -> str | None:
    if not (isinstance(v, (tuple, list)) and len(v) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v)):
        return f"must be 4 positive integers (DenseNet-121: (6, 12, 24, 16)), got {v!r}"
    return None


RULES: dict[str, Check] = {
    "model.architecture": _choice(*ARCHITECTURES),
    "model.base_filters": _int(0),
    "model.variant": _choice(*VARIANTS),
    "model.upsampling": _choice("nearest", "bilinear", "transpose"),
    "model.conv_order": _choice("conv_relu_bn", "conv_bn_relu"),
    "model.sdpa_learned_projections": _bool,
    "model.tam_merge": _choice("sum", "concat"),
    "model.input_normalization": _choice("auto", "none", "imagenet"),
    "model.dropout_rate": _float(0.0, 1.0, open_high=True),
    "model.encoder_epsilon": _float(0.0, open_low=True),
    "model.dtype": _choice(*DTYPES),
    "model.image_size": _image_size,
    "model.encoder_blocks": _layer_counts,
    "model.deep_supervision": _bool,
    "data.source": _choice("synthetic", "folder", "pack", "tfds"),
    "data.pack": _str,
    "data.tfds_name": _str,
    "data.tfds_data_dir": _str,
    "data.feeder": _choice("auto", "tf.data", "numpy"),
    "data.root": _str,
    "data.layout": _choice(*LAYOUTS),
    "data.split": _str,
    "data.include_normal": _bool,
    "data.val_split": _choice(*VAL_SPLITS),
    "data.val_fraction": _float(0.0, 1.0, open_low=True, open_high=True),
    "data.test_fraction": _float(0.0, 1.0, open_high=True),
    "data.folds": _int(0),
    "data.fold": _int(0),
    "data.group_by": _choice(*GROUP_BY),
    "data.release": _choice("", *RELEASES),
    "data.n_train": _int(1),
    "data.n_val": _int(1),
    "data.seed": _int(0),
    "data.augment.hflip": _bool,
    "data.augment.vflip": _bool,
    "data.augment.affine": _bool,
    "data.augment.brightness_contrast": _bool,
    "data.augment.speckle": _bool,
    "batch_size": _int(1),
    "num_epochs": _int(1),
    "loss": _choice(*LOSS_NAMES),
    "seed": _int(0),
    "optimizer.learning_rate": _float(0.0, open_low=True),
    "optimizer.schedule": _choice("plateau", "cosine"),
    "optimizer.b1": _float(0.0, 1.0, open_high=True),
    "optimizer.b2": _float(0.0, 1.0, open_high=True),
    "optimizer.eps": _float(0.0),
    "optimizer.plateau_factor": _float(0.0, 1.0, open_low=True, open_high=True),
    "optimizer.plateau_patience": _int(1),
    "optimizer.plateau_min_delta": _float(0.0, open_low=True),
    "optimizer.plateau_cooldown": _int(0),
    "optimizer.min_lr": _float(0.0),
    "optimizer.early_stopping_patience": _int(1),
    "optimizer.early_stopping_min_delta": _float(0.0),
    "optimizer.ema_decay": _float(0.0, 1.0, open_high=True),
    "optimizer.weight_decay": _float(0.0),
    "init_from": _str,
    "init_scope": _choice("all", "encoder"),
    "checkpoint.every_steps": _int(0),
    "checkpoint.keep_latest": _int(1),
    "checkpoint.keep_best": _int(1),
    "checkpoint.async_save": _bool,
    "log_every_steps": _int(1),
    "num_overlays": _int(0),
    "profile_steps": _profile_steps,
    "peak_flops": _float(0.0),
}


def to_dict(config) -> dict:
    """A ConfigDict (or mapping) as plain nested dicts."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return {k: to_dict(v) if isinstance(v, Mapping) or hasattr(v, "to_dict") else v
            for k, v in dict(config).items()}


def flatten(tree: Mapping) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    return traverse_util.flatten_dict(dict(tree), sep=".")


SOURCE_RULES: dict[str, Check] = {
    "source": _choice("folder", "pack", "tfds"),
    "root": _str,
    "layout": _choice(*LAYOUTS),
    "split": _str,
    "include_normal": _bool,
    "group_by": _choice(*GROUP_BY),
    "release": _choice("", *RELEASES),
    "pack": _str,
    "tfds_name": _str,
    "tfds_data_dir": _str,
    "weight": _float(0.0, open_low=True),
}


def _source_problems(flat_sources: Mapping[str, Any]) -> list[str]:
    """config.data.sources.<name>.<field>: every field known, present and valid; a folder
    source names its root, a pack source its file."""
    by_name: dict[str, dict] = {}
    for key, value in flat_sources.items():
        name, _, field = key[len("data.sources."):].partition(".")
        by_name.setdefault(name, {})[field] = value
    problems = []
    for name, fields in by_name.items():
        where = f"config.data.sources.{name}"
        unknown = sorted(set(fields) - set(SOURCE_RULES))
        missing = sorted(set(SOURCE_RULES) - set(fields))
        if unknown or missing:
            problems.append(f"{where}: unknown field(s) {unknown}, missing {missing} (build "
                            "sources with hanet_jax.train.recipes.source())")
            continue
        problems += [f"{where}.{field}: {msg}" for field, check in SOURCE_RULES.items()
                     if (msg := check(fields[field])) is not None]
        if fields["source"] == "folder" and not fields["root"]:
            problems.append(f"{where}.root: must name the dataset folder of a folder source")
        if fields["source"] == "pack" and not fields["pack"]:
            problems.append(f"{where}.pack: must name the .npz of a pack source")
        if fields["source"] == "tfds" and not fields["tfds_name"]:
            problems.append(f"{where}.tfds_name: must name the builder/config of a tfds source "
                            "(e.g. hanet_processed/busi)")
        if fields["group_by"] == "processed_release" and not fields["release"]:
            problems.append(f"{where}.release: must be 'busi' or 'udiat' when its group_by is "
                            "'processed_release'")
    return problems


def validate_config(config) -> dict:
    """Checks every key and value; returns the config as a plain dict.

    Raises ConfigError naming `config.<key>` for an unknown key, a missing key or a bad value,
    and for combinations that cannot work (e.g. data.source=folder without data.root).
    """
    flat = flatten(to_dict(config))
    sources = {k: flat.pop(k) for k in list(flat) if k.startswith("data.sources.")}
    unknown = sorted(set(flat) - set(RULES))
    if unknown:
        # A section replaced by a scalar shows up as both unknown and missing; name it once.
        raise ConfigError(f"unknown config key(s): {', '.join('config.' + k for k in unknown)}")
    missing = sorted(set(RULES) - set(flat))
    if missing:
        raise ConfigError(f"missing config key(s): {', '.join('config.' + k for k in missing)} "
                          "(start configs from hanet_jax.train.recipes.get_config())")
    problems = [f"config.{key}: {msg}" for key, check in RULES.items()
                if (msg := check(flat[key])) is not None]
    if not problems:  # each value is valid alone: do they make one network?
        model = {k[len("model."):]: v for k, v in flat.items() if k.startswith("model.")}
        try:  # resolved as train.py resolves it, without reading config.init_from yet
            model_from_config(resolve_model_config(model, ""))
        except ValueError as e:  # its messages start with the key(s): "model.x ..."
            problems.append(f"config.{e}")
        if flat["init_scope"] == "encoder" and flat["model.architecture"] != "hanet":
            problems.append("config.init_scope: 'encoder' (a DenseNet-121) fits "
                            "model.architecture='hanet' only")
    problems += _source_problems(sources)
    if not sources and flat["data.source"] == "folder" and not flat["data.root"]:
        problems.append("config.data.root: must name the dataset folder when "
                        "config.data.source='folder' (or set config.data.source='synthetic')")
    if flat["data.source"] == "pack" and not flat["data.pack"]:
        problems.append("config.data.pack: must name the .npz when config.data.source='pack'")
    if flat["data.source"] == "tfds" and not flat["data.tfds_name"]:
        problems.append("config.data.tfds_name: must name the builder/config (e.g. "
                        "hanet_processed/busi) when config.data.source='tfds'")
    if flat["data.group_by"] == "processed_release" and not flat["data.release"]:
        problems.append("config.data.release: must be 'busi' or 'udiat' when "
                        "config.data.group_by='processed_release'")
    folds, fold = flat["data.folds"], flat["data.fold"]
    if isinstance(folds, int) and isinstance(fold, int):
        if folds == 1:
            problems.append("config.data.folds: 0 (no cross-validation) or at least 2, got 1")
        elif folds and not fold < folds:
            problems.append(f"config.data.fold: must be below config.data.folds={folds}, got {fold}")
        elif not folds and fold:
            problems.append("config.data.fold: needs config.data.folds >= 2")
        if folds and flat["data.val_split"] != "grouped":
            problems.append("config.data.folds: needs config.data.val_split='grouped'")
    if isinstance(flat["optimizer.min_lr"], (int, float)) and isinstance(
            flat["optimizer.learning_rate"], (int, float)) and \
            flat["optimizer.min_lr"] > flat["optimizer.learning_rate"]:
        problems.append("config.optimizer.min_lr: must be <= config.optimizer.learning_rate")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return to_dict(config)


def save_config(path: str | os.PathLike, config) -> list[str]:
    """Writes config.json; warns about (and returns) differences from one already there."""
    changed = []
    if storage.path(path).exists():
        changed = config_differences(read_json(path), to_dict(config))
        if changed:
            logging.warning("config differs from %s (resuming?): %s", path, "; ".join(changed))
    write_json(path, config, sort_keys=True)
    return changed


def flat_json(config) -> dict[str, Any]:
    """A config (or mapping) flattened as its config.json holds it: tuples become lists."""
    return flatten(to_jsonable(config))


def config_differences(old: Mapping, new: Mapping) -> list[str]:
    """Keys whose values differ between two config dicts, as `config.a.b: old -> new`."""
    a, b = (flat_json(c) for c in (old, new))
    return [f"config.{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
