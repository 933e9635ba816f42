"""Training and validation data from a config: synthetic phantoms, a validated dataset folder,
a pack, a prepared TFDS dataset, or several of them (config.data.sources).

Every process builds the same two decoded datasets on its own: it checks every file, makes the
same split, and decodes every training and validation example (`pipeline.decode_examples`), not
only the examples it will feed. `pipeline.make_dataset` then gives each process only its slice of
every global batch, from that full cache. The permutation that picks the slices is drawn over all
examples, anew each epoch, so within a few epochs every process has fed nearly every example:
decoding once and keeping everything (uint8 at the model size) is cheaper than decoding each
epoch's slice again, and needs no communication between processes (pipeline.py's docstring has
the details; tests/test_process_decode.py shows it with two processes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
from absl import logging

from hanet_jax import storage
from hanet_jax.data import check, pipeline, splits, synthetic
from hanet_jax.data.augment import AugmentConfig
from hanet_jax.data.layouts import DatasetError


@dataclasses.dataclass(frozen=True)
class TrainData:
    train: pipeline.DecodedDataset
    val: pipeline.DecodedDataset
    augment: AugmentConfig
    description: str
    # WORKDIR/data_split.json for `eval.py --threshold_from_split val` and `--run_split
    # val|test`: the held-out stems under their root/layout/split folder (several sources:
    # {"sources": {name: that}}). None for synthetic data.
    split_record: dict | None = None
    # Several sources (config.data.sources): each one's validation set, in order; `val` pools
    # them. Empty for one source.
    val_sources: tuple[tuple[str, pipeline.DecodedDataset], ...] = ()


def augment_config(data_cfg) -> AugmentConfig:
    a = data_cfg.augment
    return AugmentConfig(hflip=a.hflip, vflip=a.vflip, affine=a.affine,
                                  brightness_contrast=a.brightness_contrast, speckle=a.speckle)


def _synthetic(data_cfg, image_size: int) -> tuple[pipeline.DecodedDataset, ...]:
    out = []
    for split, n in (("train", data_cfg.n_train), ("val", data_cfg.n_val)):
        images, masks = synthetic.make_split(split, n, image_size, seed=data_cfg.seed)
        out.append(pipeline.from_arrays(images, masks,
                                        stems=[f"{split}_{i}" for i in range(n)]))
    return tuple(out)


def split_parameters(data_cfg) -> dict:
    """The keys of `config.data` that decide a run's split (`splits.hold_out`'s arguments)."""
    return {k: data_cfg[k] for k in ("val_split", "val_fraction", "test_fraction", "folds",
                                     "fold", "seed", "group_by", "release")}


def _folder(data_cfg, image_size: int, cache_dir: str | None):
    root = data_cfg.root
    if not os.path.isdir(root):
        raise DatasetError(f"config.data.root: dataset folder {root} does not exist")
    # Every file is checked (and every problem reported) before any training work.
    examples = check.require_valid(root, data_cfg.layout, data_cfg.split,
                                   include_normal=data_cfg.include_normal)
    if data_cfg.test_fraction > 0 and data_cfg.val_split != "grouped":
        raise DatasetError("config.data.test_fraction needs config.data.val_split='grouped' "
                           "(the release's split leaks copies across sides)")
    what = (f"config.data.folds={data_cfg.folds}" if data_cfg.folds
            else f"config.data.val_fraction={data_cfg.val_fraction}")
    try:
        # The groups are computed once: the splits use them, and eval's confidence intervals
        # resample them. data.pack records its originals' sides through the same function.
        held = splits.hold_out(examples, **split_parameters(data_cfg), cache_dir=cache_dir)
        train, val, test, groups = held.train, held.val, held.test, held.groups
    except ValueError as e:  # a fraction no split of these groups can honour
        raise DatasetError(f"{root}: {e} (config.data.test_fraction={data_cfg.test_fraction}, "
                           f"{what})") from e
    if not train or not val:
        raise DatasetError(f"{root}: the {data_cfg.val_split} split of {len(examples)} examples "
                           f"left {len(train)} for training and {len(val)} for validation "
                           f"({what})")
    record = {"root": storage.text(root), "layout": data_cfg.layout, "split": data_cfg.split,
              "include_normal": bool(data_cfg.include_normal), "val_split": data_cfg.val_split,
              **({"folds": data_cfg.folds, "fold": data_cfg.fold} if data_cfg.folds else {}),
              "val": [ex.stem for ex in val],
              "test": [ex.stem for ex in test]}
    if groups is not None:  # near-duplicate group of each held-out image
        record["groups"] = {ex.stem: groups[ex.stem] for ex in (*val, *test)}
    return (pipeline.decode_examples(train, image_size),
            pipeline.decode_examples(val, image_size), record)


def _tfds(data_cfg, image_size: int):
    """A prepared TFDS dataset (`tfds_builders.materialised_folder`: its split as a folder of
    lossless PNGs in the builder's layout), split and decoded by `_folder`, so it holds out what
    the original folder would. No fingerprint cache: the folder is new in every process, so a
    cache keyed on its paths would only grow. The record names the dataset, its version and a
    digest of its pixels, for eval to write the folder again and refuse other data."""
    try:
        from hanet_jax.data import tfds_builders
    except ImportError as e:
        raise DatasetError(f"config.data.tfds_name={data_cfg.tfds_name}: {e}") from e
    try:
        folder = tfds_builders.materialised_folder(data_cfg.tfds_name, data_cfg.tfds_data_dir,
                                                   data_cfg.split)
    except DatasetError as e:
        raise DatasetError(f"config.data.tfds_name={data_cfg.tfds_name}, "
                           f"tfds_data_dir={data_cfg.tfds_data_dir!r}, split={data_cfg.split!r}: "
                           f"{e}") from e
    view = ml_collections.ConfigDict(data_cfg.to_dict())
    for key in ("root", "layout", "split", "include_normal"):
        view[key] = folder[key]
    train, val, record = _folder(view, image_size, None)
    # root: the dataset's name, not the temporary folder (eval writes the folder again)
    record.update(root=f"tfds:{folder['name']}", tfds=folder["name"], tfds_split=data_cfg.split,
                  tfds_data_dir=folder["data_dir"], tfds_version=folder["version"],
                  tfds_sha256=folder["sha256"])
    what = f"TFDS {folder['name']} {folder['version']} ({folder['path']}, split {data_cfg.split})"
    return train, val, record, what


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return (a or "") == (b or "")


def _pack(data_cfg, image_size: int):
    """Training and validation originals of a pack (`hanet_jax.data.pack`), on the sides it
    recorded: those of a folder run with the same split keys, which must be this config's."""
    from hanet_jax.data import pack as data_pack
    from hanet_jax.train.config import ConfigError

    pack = data_pack.read_pack(data_cfg.pack)
    recorded, wanted = pack.meta["split"], split_parameters(data_cfg)
    for key in data_pack.SPLIT_KEYS:
        if key == "val_fraction" and recorded["folds"]:
            continue  # folds replace the fraction, in a folder run too
        if not _same(wanted[key], recorded[key]):
            raise ConfigError(
                f"config.data.{key}={wanted[key]!r}, but {pack.path} recorded its originals' "
                f"sides with {key}={recorded[key]!r}: set --config.data.{key}={recorded[key]} "
                f"(the pack's split: {', '.join(f'{k}={v}' for k, v in recorded.items())}), or "
                f"pack again with the config's")
    if recorded["folds"] and not 0 <= data_cfg.fold < recorded["folds"]:
        raise ConfigError(f"config.data.fold={data_cfg.fold}: {pack.path} holds folds "
                          f"0..{recorded['folds'] - 1}")
    sides = pack.sides_of_fold(data_cfg.fold)

    def side(name):
        return [i for i, s in enumerate(sides) if s == name]

    def subset(name):
        idx = side(name)
        if not idx:
            raise DatasetError(f"{pack.path}: no {name} originals (config.data.pack)")
        return pipeline.from_arrays(pack.images[idx], pack.masks[idx], image_size=image_size,
                                    stems=[pack.stems[i] for i in idx])

    held = [pack.stems[i] for i in (*side("val"), *side("test"))]
    groups = dict(zip(pack.stems, pack.groups.tolist()))
    record = {"pack": pack.path, "pack_sha256": pack.sha256, "root": pack.path, "layout": "pack",
              "split": "train", "include_normal": False, "val_split": recorded["val_split"],
              **({"folds": data_cfg.folds, "fold": data_cfg.fold} if data_cfg.folds else {}),
              "val": [pack.stems[i] for i in side("val")],
              "test": [pack.stems[i] for i in side("test")],
              "groups": {s: groups[s] for s in held}}
    what = (f"{pack.path} ({len(pack)} {pack.meta['dataset']} originals packed at "
            f"{pack.meta['size']}x{pack.meta['size']}, {recorded['val_split']} split)")
    return subset("train"), subset("val"), record, what


def _one_source(data_cfg, name: str, fields) -> Any:
    """config.data as a run of source `name` alone would have it: its fields (SOURCE_FIELDS)
    over config.data's, whose split keys (seed, fractions, folds) every source shares."""
    view = ml_collections.ConfigDict(data_cfg.to_dict())
    for key, value in fields.items():
        if key != "weight":
            view[key] = value
    view.sources = ml_collections.ConfigDict()
    return view


def _sources(config, workdir: str | None) -> TrainData:
    """Several datasets in one run (config.data.sources): each built and split exactly as a run
    of it alone (`build_data` on `_one_source`), then concatenated for training, with each
    source's sampling weight (`pipeline.concatenate`, `pipeline.epoch_order`)."""
    parts, vals, records, whats = [], [], {}, []
    for name, fields in config.data.sources.items():
        one = ml_collections.ConfigDict(config.to_dict())
        one.data = _one_source(config.data, name, fields)
        try:
            built = build_data(one, workdir, _log=False, _fingerprints=f"fingerprints/{name}")
        except DatasetError as e:  # name the source: its keys are config.data.sources.<name>.*
            raise DatasetError(f"config.data.sources.{name}: {e}") from e
        parts.append((name, built.train, float(fields.weight)))
        vals.append((name, built.val, 1.0))
        records[name] = built.split_record
        whats.append(f"{name} (weight {fields.weight:g}): {built.description}")
    train, val = pipeline.concatenate(parts), pipeline.concatenate(vals)
    # each source's validation set: views of the pooled one, not a second copy of its images
    val_sources = tuple((name, pipeline.source_of(val, name)) for name, _, _ in vals)
    description = (f"{len(parts)} sources, {len(train)} train / {len(val)} val at "
                   f"{config.model.image_size}x{config.model.image_size}: " + "; ".join(whats))
    logging.info("data: %s", description)
    return TrainData(train, val, augment_config(config.data), description,
                     {"sources": records}, val_sources)


def build_data(config, workdir: str | None = None, *, _log: bool = True,
               _fingerprints: str = "fingerprints") -> TrainData:
    """Decoded train and validation sets for `config` (raises DatasetError naming the path)."""
    data_cfg, size = config.data, config.model.image_size
    if len(data_cfg.get("sources", {})):
        return _sources(config, workdir)
    if data_cfg.source == "synthetic":
        train, val = _synthetic(data_cfg, size)
        record = None
        what = f"synthetic phantoms (seed {data_cfg.seed})"
    elif data_cfg.source == "pack":  # one .npz of originals (hanet_jax.data.pack)
        train, val, record, what = _pack(data_cfg, size)
    elif data_cfg.source == "tfds":  # prepared with hanet_jax.data.tfds_builders
        train, val, record, what = _tfds(data_cfg, size)
    else:
        # The grouped split's image fingerprints, cached (atomic writes: safe for many processes).
        cache = storage.path(workdir) / _fingerprints if workdir is not None else None
        train, val, record = _folder(data_cfg, size, cache)
        what = f"{data_cfg.root} ({data_cfg.layout}/{data_cfg.split}, {data_cfg.val_split} split)"
    if len(train) < config.batch_size:
        raise DatasetError(f"{what}: {len(train)} training examples do not fill one global batch "
                           f"(config.batch_size={config.batch_size})")
    description = f"{what}: {len(train)} train / {len(val)} val at {size}x{size}"
    if _log:
        logging.info("data: %s", description)
    return TrainData(train, val, augment_config(data_cfg), description, record)
