"""Evaluation of a segmentation model on a dataset split (spec: evaluation.md); `eval.py` is its CLI.

The core is `evaluate(predict_fn, examples, ...)`, where `predict_fn(list of uint8 images)`
returns one float probability map per image: a `inference.Predictor`, or a fake model in tests.

Decisions (each also recorded in the JSON report):
- **Scoring resolution.** By default each image is scored at its ground-truth mask's resolution:
  the model's probabilities are resized bilinearly to the image (`Predictor` does this) and,
  should they still differ, to the mask. `score_size=(h, w)` (`--model_resolution`) scores at
  the model's size as the release did: image resized bilinearly, mask by nearest neighbour.
- **Protocols.** "fixed" (one threshold) and "paper_oracle" (per-image F1-optimal threshold from
  the image's own ground truth, labelled as an oracle); see `protocols.py`.
- **Threshold from a validation split.** `select_threshold` scores the validation images at
  every threshold of `THRESHOLD_GRID` (0.05, 0.10, ..., 0.95) and keeps the one with the
  highest mean per-image Dice (images whose Dice is undefined at a threshold, i.e. empty mask and
  empty prediction, are left out of that threshold's mean). Ties go to the threshold closest to
  0.5, then to the lower one. Only the validation examples are read; `resolve_threshold_examples`
  refuses a validation set that shares an image file with the evaluated split.
- **Post-processing** (`postprocess.py`, "fixed" protocol only): "none" by default;
  "largest_component" keeps the largest connected component, "most_probable_component" the one
  with the most probability mass; "auto" (with a validation split)
  lets `select_threshold` choose it jointly with the threshold, on the validation images only.
  Ties go to the earlier option in `POSTPROCESS` order (none, largest, most probable), before
  the threshold rule: "none" at 0.20 beats "largest_component" at 0.50 on equal Dice.
- **TTA.** Evaluated as a separate predictor; its summaries go to `"protocols_tta"` and its CSV
  rows carry the protocol names `fixed+tta` / `paper_oracle+tta` (same columns as
  `metrics.PER_IMAGE_COLUMNS`). With a validation threshold, the TTA predictor gets its own.
- **Ensembles** (`--checkpoint DIR` with `DIR/ensemble.json`, `hanet_jax/ensemble.py`): the
  members' mean probability. On a training run's split (`--run_split`, and the validation
  split of `--threshold_from_split val`) each image is predicted only by the members that held
  it out, as their `data_split.json` files record: for a k-fold cross-validation the test
  images by all k members and each validation image by its fold's member (out-of-fold).
- **Confidence intervals.** Percentile bootstrap (`bootstrap.bootstrap_ci`), per metric,
  seeded; NaN images are left out, as for the mean. It resamples images, or, for a training
  run's held-out split whose `data_split.json` records the near-duplicate groups, whole groups
  (the copies of one original are not independent images).
- **Strata** (`strata.py`): each protocol's summary holds "strata": mean Dice and Jaccard with
  group-resampled CIs per lesion class (where known) and per lesion-size tercile, the lesions
  missed (Dice < 0.1) and, where the data hold lesion-free images, the share of them with a
  predicted lesion. The per-image rows carry "class" and "lesion_area" (fraction of the image,
  at the scoring resolution).
- **Pictures.** Overlays (TP green, FP red, FN blue) for the "fixed" protocol, one
  `<stem>.png` per image, and `cases_grid.png`: best, median and worst image by fixed-protocol
  Dice (`viz.select_cases`), or with `overlays_order="worst"` the `WORST_ROWS` lowest-Dice
  images, worst first (`viz.worst_cases`), so the misses come first. Grid rows of different sizes
  are resized (image bilinear, masks nearest) to the first row's size; the Dice printed is the
  one scored.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hanet_jax.eval import overlays as viz
from hanet_jax.eval import strata
from hanet_jax import storage
from hanet_jax.json_files import read_json, write_json
from hanet_jax.eval.bootstrap import bootstrap_ci, n_groups
from hanet_jax.data import check, layouts
from hanet_jax.data.layouts import Example
from hanet_jax.data.splits import DATA_SPLIT_FILE
from hanet_jax.data.pipeline import resize_pair
from hanet_jax.inference.predictor import resize_probabilities
from hanet_jax.eval.metrics import METRIC_NAMES, confusion_counts, metrics_from_counts, summarize, write_per_image_csv
from hanet_jax.inference.postprocess import POSTPROCESS
from hanet_jax.eval.protocols import PROTOCOLS, evaluate_image
from hanet_jax.inference.postprocess import fixed_mask

PredictFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]

THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95
ORACLE_LABEL = "oracle: per-image threshold chosen with the ground truth"
ENSEMBLE_LABEL = ("mean probability of the members; on a training run's split, of the members "
                  "that held the image out")
TTA_SUFFIX = "+tta"
GRID_FILE = "cases_grid.png"
OVERLAY_ORDERS = ("cases", "worst")  # best/median/worst, or the WORST_ROWS worst first
WORST_ROWS = 12


class EvalError(ValueError):
    """A request that cannot be evaluated; the message says why and names the file."""


# --------------------------------------------------------------------------- scoring


def load_example(example: Example, score_size: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, bool mask); at `score_size` (image bilinear, mask nearest) if given."""
    image = layouts.read_image(example.image_path)
    gt = layouts.read_mask(example.mask_paths)
    if score_size is not None:
        image, gt = resize_pair(image, gt, score_size)
        gt = gt[..., 0].astype(bool)
    return image, gt


def predictions(predict_fn: PredictFn, examples: Sequence[Example], *, batch_size: int = 8,
                score_size: Sequence[int] | None = None) -> Iterator[tuple[Example, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (example, image, gt, prob) with prob float32 at gt's size, `batch_size` at a time."""
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        loaded = [load_example(ex, score_size) for ex in chunk]
        images = [image for image, _ in loaded]
        if hasattr(predict_fn, "predict_examples"):  # an ensemble: per image, its held-out members
            probs = list(predict_fn.predict_examples([ex.stem for ex in chunk], images))
        else:
            probs = list(predict_fn(images))
        if len(probs) != len(chunk):
            raise EvalError(f"predict_fn returned {len(probs)} maps for {len(chunk)} images")
        for ex, (image, gt), prob in zip(chunk, loaded, probs):
            prob = np.asarray(prob, np.float32)
            if prob.ndim == 3 and prob.shape[-1] == 1:
                prob = prob[..., 0]
            if prob.ndim != 2:
                raise EvalError(f"{ex.image_path}: prediction has shape {prob.shape}; expected (H, W)")
            if prob.shape != gt.shape:  # score at the ground truth's resolution
                prob = resize_probabilities(prob, gt.shape)
            yield ex, image, gt, prob


def summarize_protocol(rows: Sequence[dict], *, n_bootstrap: int = 2000, seed: int = 0,
                       groups: Mapping[str, Any] | None = None) -> dict:
    """{"mean", "pooled", "ci95", "n_undefined"} of one protocol's per-image rows; `groups`
    (stem -> near-duplicate group) makes the bootstrap resample whole groups."""
    s = summarize(rows)
    ids = [groups[r["stem"]] for r in rows] if groups is not None else None
    if n_bootstrap > 0:
        ci = {m: list(bootstrap_ci([r[m] for r in rows], n_bootstrap, seed, groups=ids))
              for m in METRIC_NAMES}
    else:
        ci = {m: [math.nan, math.nan] for m in METRIC_NAMES}
    return {"mean": s["mean"], "pooled": s["pooled"], "ci95": ci, "n_undefined": s["n_undefined"]}


@dataclasses.dataclass
class Evaluation:
    """Per-image rows (CSV form, protocol names carrying `suffix`) and one summary per protocol."""

    rows: list[dict]
    summaries: dict[str, dict]  # keyed by the plain protocol name
    n_images: int
    suffix: str = ""


def evaluate(predict_fn: PredictFn, examples: Sequence[Example], *, protocols: Sequence[str] = PROTOCOLS,
             threshold: float = 0.5, batch_size: int = 8, score_size: Sequence[int] | None = None,
             n_bootstrap: int = 2000, seed: int = 0, suffix: str = "",
             overlay_dir: str | os.PathLike | None = None,
             groups: Mapping[str, Any] | None = None, postprocess: str = "none",
             classes: strata.ClassLabels | None = None, overlays_order: str = "cases") -> Evaluation:
    """Scores every example under every protocol (see the module docstring).

    `threshold` and `postprocess` are the "fixed" protocol's. `suffix` is appended to the protocol
    names of the rows (e.g. "+tta"). `overlay_dir` needs the "fixed" protocol. `classes` gives
    each stem's lesion class (default: `strata.resolve_classes(examples)`, i.e. the examples'
    own labels where every one has one).
    """
    protocols = tuple(protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise EvalError(f"unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
    if not examples:
        raise EvalError("no examples to evaluate")
    if overlay_dir is not None and "fixed" not in protocols:
        raise EvalError("overlays draw the 'fixed' protocol; evaluate it too")
    if postprocess not in POSTPROCESS:
        raise EvalError(f"unknown post-processing {postprocess!r}; choose from {POSTPROCESS}")
    if overlays_order not in OVERLAY_ORDERS:
        raise EvalError(f"unknown overlays order {overlays_order!r}; choose from {OVERLAY_ORDERS}")
    classes = classes if classes is not None else strata.resolve_classes(examples)
    pictures = _Pictures(overlay_dir, score_size, overlays_order) if overlay_dir is not None else None
    rows = {p: [] for p in protocols}
    for ex, image, gt, prob in predictions(predict_fn, examples, batch_size=batch_size, score_size=score_size):
        about = {"class": classes.of(ex.stem), "lesion_area": strata.lesion_area(gt),
                 **({"group": str(groups[ex.stem])} if groups is not None else {})}
        for p in protocols:
            row = evaluate_image(prob, gt, p, threshold, postprocess)
            rows[p].append({"stem": ex.stem, "protocol": p + suffix, **row, **about})
        if pictures is not None:
            pictures.add(ex, image, gt, fixed_mask(prob, threshold, postprocess), rows["fixed"][-1]["dice"])
    if pictures is not None:
        pictures.grid()
    summaries = {p: {**summarize_protocol(rows[p], n_bootstrap=n_bootstrap, seed=seed, groups=groups),
                     "strata": strata.summarize_strata(rows[p], classes, n_bootstrap=n_bootstrap,
                                                       seed=seed, groups=groups)}
                 for p in protocols}
    if "fixed" in summaries:
        summaries["fixed"] = {"threshold": float(threshold), "postprocess": postprocess, **summaries["fixed"]}
    if "paper_oracle" in summaries:
        summaries["paper_oracle"] = {"label": ORACLE_LABEL, **summaries["paper_oracle"]}
    return Evaluation([r for p in protocols for r in rows[p]], summaries, len(examples), suffix)


class _Pictures:
    """Writes the per-image overlays as it goes; keeps the (bit-packed) masks for the grid."""

    def __init__(self, directory, score_size, order: str = "cases"):
        self.dir = storage.path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.score_size = score_size
        self.order = order
        self.kept: dict[str, tuple[Example, np.ndarray, tuple[int, int]]] = {}
        self.dice: dict[str, float] = {}

    def add(self, ex: Example, image, gt, pred, dice: float) -> None:
        viz.save_overlay(self.dir / f"{ex.stem}.png", image, pred, gt)
        self.kept[ex.stem] = (ex, np.packbits(pred), pred.shape)
        self.dice[ex.stem] = dice

    def grid(self) -> None:
        if all(math.isnan(d) for d in self.dice.values()):
            return  # nothing to rank (every Dice undefined)
        entries = []
        cases = (viz.worst_cases(self.dice, WORST_ROWS) if self.order == "worst"
                 else viz.select_cases(self.dice))
        for label, stem in cases:
            ex, packed, shape = self.kept[stem]
            image, gt = load_example(ex, self.score_size)
            pred = np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)
            if entries and image.shape[:2] != entries[0]["image"].shape[:2]:
                size = entries[0]["image"].shape[:2]
                pred = resize_pair(image, pred, size)[1]
                image, gt = resize_pair(image, gt, size)
            entries.append({"label": label, "stem": stem, "image": image, "gt": np.squeeze(gt).astype(bool),
                            "pred": np.squeeze(pred).astype(bool), "dice": self.dice[stem]})
        viz.case_grid(entries, self.dir / GRID_FILE)


# --------------------------------------------------------------------------- threshold on val


@dataclasses.dataclass
class ThresholdChoice:
    threshold: float
    grid: tuple[float, ...]
    mean_dice: list[float]  # per grid threshold, with the chosen post-processing (NaN: all undefined)
    n_images: int
    postprocess: str = "none"
    mean_dice_by_postprocess: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def select_threshold(predict_fn: PredictFn, examples: Sequence[Example], *, grid: Sequence[float] = THRESHOLD_GRID,
                     batch_size: int = 8, score_size: Sequence[int] | None = None,
                     postprocess: Sequence[str] = ("none",)) -> ThresholdChoice:
    """The (post-processing, grid threshold) pair with the highest mean per-image Dice on
    `examples` (a validation set); ties go to the earlier entry of `postprocess`, then to the
    threshold closest to 0.5, then to the lower one."""
    if not examples:
        raise EvalError("no validation examples to choose a threshold on")
    unknown = [p for p in postprocess if p not in POSTPROCESS]
    if unknown or not postprocess:
        raise EvalError(f"unknown post-processing {unknown}; choose from {POSTPROCESS}")
    grid = tuple(float(t) for t in grid)
    postprocess = tuple(postprocess)
    dice = np.full((len(postprocess), len(examples), len(grid)), np.nan)
    for i, (_, _, gt, prob) in enumerate(predictions(predict_fn, examples, batch_size=batch_size,
                                                     score_size=score_size)):
        for k, post in enumerate(postprocess):
            for j, t in enumerate(grid):
                counts = confusion_counts(fixed_mask(prob, t, post), gt)
                dice[k, i, j] = metrics_from_counts(**_lower(counts))["dice"]
    defined = ~np.isnan(dice)
    mean = np.where(defined.any(axis=1), np.nansum(dice, axis=1) / np.maximum(defined.sum(axis=1), 1), np.nan)
    if np.isnan(mean).all():
        raise EvalError("cannot choose a threshold: Dice is undefined on every validation image "
                        "(empty masks and empty predictions)")
    best = np.nanmax(mean)
    candidates = [(k, j) for k in range(len(postprocess)) for j in range(len(grid)) if mean[k, j] == best]
    k, j = min(candidates, key=lambda kj: (kj[0], abs(grid[kj[1]] - 0.5), grid[kj[1]]))
    by_post = {post: [float(m) for m in mean[n]] for n, post in enumerate(postprocess)}
    return ThresholdChoice(grid[j], grid, by_post[postprocess[k]], len(examples), postprocess[k], by_post)


def _lower(counts: dict) -> dict:
    return {k.lower(): v for k, v in counts.items()}


def read_data_split(path: str | os.PathLike) -> dict:
    """A trainer's `data_split.json`: {"root", "layout", "val": [stems]} (optionally "split",
    the folder the stems come from, default "train"); a run of several sources holds
    {"sources": {name: such a record}}."""
    try:
        ds = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise EvalError(f"{path}: cannot read the data split: {e}") from e
    records = ds["sources"].values() if isinstance(ds.get("sources"), dict) else [ds]
    for record in records:
        missing = [k for k in ("root", "layout", "val") if k not in record]
        if missing or not isinstance(record.get("val"), list):
            raise EvalError(f"{path}: expected keys root, layout and a list 'val'; "
                            f"missing {missing}")
    return ds


def run_split_examples(checkpoint: str | os.PathLike, which: str = "val", *, pools: dict | None = None,
                       source: str | None = None) -> tuple[list[Example], dict]:
    """The images a training run held out, as its WORKDIR/data_split.json names them (validated
    with `check.require_valid`), and a description of where they come from. `pools` caches the
    validated folders across calls. A run of several sources (config.data.sources) records
    each one's: `source` picks one; without it, the images of every source together."""
    ds_path = storage.path(checkpoint) / DATA_SPLIT_FILE
    if not ds_path.is_file():
        raise EvalError(f"{ds_path} does not exist: only a training workdir that trained on a "
                        f"dataset folder, pack or TFDS dataset records its {which} split")
    ds = read_data_split(ds_path)
    if isinstance(ds.get("sources"), dict):
        names = list(ds["sources"])
        if source is not None and source not in names:
            raise EvalError(f"--source {source}: {ds_path} holds the sources {names}")
        per = [_record_examples(ds_path, ds["sources"][n], which, pools)
               for n in ([source] if source else names)]
        if len(per) == 1:
            return per[0][0], {**per[0][1], "run_source": source}
        info = {"source": str(ds_path), "root": [i["root"] for _, i in per],
                "layout": [i["layout"] for _, i in per], "folder_split": "train",
                "sources": names}
        if all("groups" in i for _, i in per):  # group ids, kept apart per source
            info["groups"] = {s: f"{n}:{g}" for n, (_, i) in zip(names, per)
                              for s, g in i["groups"].items()}
        return [ex for examples, _ in per for ex in examples], info
    if source is not None:
        raise EvalError(f"--source {source}: {ds_path} records one dataset, not several sources")
    return _record_examples(ds_path, ds, which, pools)


def _record_examples(ds_path, ds: dict, which: str, pools: dict | None
                     ) -> tuple[list[Example], dict]:
    """`run_split_examples` of one dataset's record."""
    if not isinstance(ds.get(which), list) or not ds[which]:
        raise EvalError(f"{ds_path}: no {which!r} images recorded"
                        + (" (train with config.data.test_fraction > 0 to hold out a test set)"
                           if which == "test" else ""))
    pack = ds.get("pack")
    if pack:  # a run from a pack (hanet_jax.data.pack): its originals, unpacked once
        from hanet_jax.data import pack as data_pack
        ds = {**ds, **data_pack.unpacked_folder(pack, ds.get("pack_sha256"))}
    if ds.get("tfds"):  # a run from a prepared TFDS dataset: its split, written once as a folder
        ds = {**ds, **_tfds_folder(ds_path, ds)}
    source_split = ds.get("split", "train")
    key = (ds["root"], ds["layout"], source_split, bool(ds.get("include_normal", False)))
    if pools is None or key not in pools:  # an ensemble's members share the folder: check it once
        pool = check.require_valid(*key[:3], include_normal=key[3])
        if pools is not None:
            pools[key] = pool
    by_stem = {ex.stem: ex for ex in (pools[key] if pools is not None else pool)}
    missing = [s for s in ds[which] if s not in by_stem]
    if missing:
        raise EvalError(f"{ds_path}: {len(missing)} {which} stem(s) not found in {ds['root']} "
                        f"(layout={ds['layout']}, split={source_split}): {missing[:5]}")
    info = {"source": str(ds_path), "root": ds["root"], "layout": ds["layout"],
            "folder_split": source_split, **({"pack": pack} if pack else {}),
            **({"tfds": ds["tfds"]} if ds.get("tfds") else {})}
    groups = ds.get("groups")
    if isinstance(groups, dict) and all(s in groups for s in ds[which]):
        info["groups"] = {s: groups[s] for s in ds[which]}
    return [by_stem[s] for s in ds[which]], info


def _tfds_folder(ds_path, ds: dict) -> dict:
    """The folder of a run's TFDS dataset (`tfds_builders.materialised_folder`), refused when
    the dataset is no longer the one the run trained on (version or pixels)."""
    try:
        from hanet_jax.data import tfds_builders
        folder = tfds_builders.materialised_folder(ds["tfds"], ds.get("tfds_data_dir"),
                                                   ds.get("tfds_split", "train"))
    except (ImportError, layouts.DatasetError) as e:
        raise EvalError(f"{ds_path}: the run trained on the TFDS dataset {ds['tfds']}: {e}") from e
    for key in ("version", "sha256"):
        if ds.get(f"tfds_{key}") and folder[key] != ds[f"tfds_{key}"]:
            raise EvalError(f"{ds_path}: the run trained on {ds['tfds']} with {key} "
                            f"{ds[f'tfds_{key}'][:16]}, but {folder['path']} now holds "
                            f"{folder[key][:16]}: not the images it held out")
    return {k: folder[k] for k in ("root", "layout", "split", "include_normal")}


def held_out_examples(checkpoints: Sequence[str | os.PathLike], which: str = "val"
                      ) -> tuple[list[Example], dict, list[set[str]]]:
    """`run_split_examples` over the members of an ensemble: the union of the images they held
    out in split `which`, its description, and each member's held-out stems (for
    `ensemble.EnsemblePredictor`: an image is predicted only by the members that held it out)."""
    pools: dict = {}
    per = [run_split_examples(c, which, pools=pools) for c in checkpoints]
    if len(per) == 1:
        examples, info = per[0]
        return examples, info, [{ex.stem for ex in examples}]
    folders = {(i["root"], i["layout"], i["folder_split"]) for _, i in per}
    if len(folders) > 1:
        raise EvalError(f"the ensemble's members held out {which} images of different folders "
                        f"({', '.join(i['source'] for _, i in per)}): {sorted(folders)}")
    by_stem, groups = {}, {}
    for examples, info in per:
        for ex in examples:
            by_stem.setdefault(ex.stem, ex)
        groups.update(info.get("groups") or {})
    root, layout, folder_split = folders.pop()
    info = {"source": [i["source"] for _, i in per], "root": root, "layout": layout,
            "folder_split": folder_split}
    if all(stem in groups for stem in by_stem):
        info["groups"] = {stem: groups[stem] for stem in by_stem}
    return list(by_stem.values()), info, [{ex.stem for ex in examples} for examples, _ in per]


def resolve_threshold_examples(checkpoint: str | os.PathLike, root: str, layout: str, split: str,
                               test_examples: Sequence[Example]) -> tuple[list[Example], dict]:
    """Validation examples for `--threshold_from_split split` and a description of them.

    For `split` "val", a training workdir's `data_split.json` wins (its "val" stems, under its
    own root/layout); otherwise the `split` folder of ROOT. Both are validated (`check.require_valid`). Raises
    `EvalError` when the validation set shares an image file with the evaluated examples.
    """
    examples, info, _ = _threshold_examples([checkpoint], root, layout, split, test_examples)
    return examples, info


def _threshold_examples(members: Sequence[str | os.PathLike], root: str, layout: str, split: str,
                        test_examples: Sequence[Example]) -> tuple[list[Example], dict, list[set[str]] | None]:
    """`resolve_threshold_examples` for an ensemble's members, with each member's held-out
    stems when they come from the members' `data_split.json` (else None: every member
    predicts every image)."""
    held = None
    if split == "val" and all((storage.path(m) / DATA_SPLIT_FILE).is_file() for m in members):
        examples, info, held = held_out_examples(members, "val")
        info = {"split": split, **info}
    else:
        examples = check.require_valid(root, layout, split)
        info = {"split": split, "source": os.path.join(root, split), "root": root, "layout": layout}
    test_files = {os.path.realpath(ex.image_path) for ex in test_examples}
    shared = [ex.image_path for ex in examples if os.path.realpath(ex.image_path) in test_files]
    if shared:
        raise EvalError(f"the threshold split {info['source']} shares {len(shared)} image file(s) with the "
                        f"evaluated split, e.g. {shared[0]}; choose the threshold on held-out data")
    return examples, info, held


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class EvalConfig:
    """What `eval.py` asks for (see its --help)."""

    checkpoint: str
    data_dir: str | None
    layout: str | None
    split: str
    out: str
    protocols: tuple[str, ...] = ("fixed",)
    threshold: float | None = None  # None: 0.5, or chosen on threshold_from_split
    per_image: str | None = None
    overlays: str | None = None
    tta: bool = False
    threshold_from_split: str | None = None
    postprocess: str = "none"  # one of POSTPROCESS | auto (chosen on threshold_from_split)
    run_split: str | None = None  # evaluate CHECKPOINT/data_split.json's images of this split
    split_from: str | None = None  # ... of this workdir's data_split.json instead (cross-dataset)
    source: str | None = None  # a run of several sources: this source's images
    model_resolution: bool = False
    gradcam: str | None = None
    gradcam_stems: tuple[str, ...] = ()
    bootstrap: int = 2000
    seed: int = 0
    batch_size: int = 8
    labels: str | None = None  # CSV of stem,class (strata.read_labels); else from the data
    include_normal: bool = False  # busi layout: also score the normal (lesion-free) images
    overlays_order: str = "cases"  # one of OVERLAY_ORDERS


def _check_config(cfg: EvalConfig) -> None:
    if (cfg.split_from or cfg.source) and not cfg.run_split:
        raise EvalError("--split_from and --source choose the images of --run_split: give it")
    if cfg.threshold is not None and not 0.0 <= cfg.threshold <= 1.0:
        raise EvalError(f"--threshold must be in [0, 1], got {cfg.threshold}")
    if cfg.threshold is not None and cfg.threshold_from_split:
        raise EvalError("give either --threshold or --threshold_from_split, not both")
    if cfg.threshold_from_split and not cfg.run_split and cfg.threshold_from_split == cfg.split:
        raise EvalError(f"--threshold_from_split {cfg.threshold_from_split} is the evaluated split; "
                        f"choose the threshold on another (validation) split")
    if cfg.run_split and cfg.threshold_from_split == cfg.run_split:
        raise EvalError(f"--run_split {cfg.run_split} with --threshold_from_split {cfg.run_split} "
                        f"would choose the threshold on the images it scores")
    if not cfg.run_split and not (cfg.data_dir and cfg.layout):
        raise EvalError("give --data_dir and --layout, or --run_split val with a training workdir")
    if cfg.postprocess not in (*POSTPROCESS, "auto"):
        raise EvalError(f"--postprocess must be one of {(*POSTPROCESS, 'auto')}, got {cfg.postprocess!r}")
    if cfg.postprocess == "auto" and not cfg.threshold_from_split:
        raise EvalError("--postprocess auto chooses on a validation split: give --threshold_from_split too")
    if cfg.threshold_from_split and "fixed" not in cfg.protocols:
        raise EvalError("--threshold_from_split sets the 'fixed' protocol's threshold; use --protocol fixed or both")
    if cfg.overlays and "fixed" not in cfg.protocols:
        raise EvalError("--overlays draws the 'fixed' protocol; use --protocol fixed or both")
    if cfg.gradcam_stems and not cfg.gradcam:
        raise EvalError("--gradcam_stems needs --gradcam DIR")
    if cfg.bootstrap < 0:
        raise EvalError(f"--bootstrap must be >= 0 (0: no intervals), got {cfg.bootstrap}")
    if cfg.batch_size < 1:
        raise EvalError(f"--batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.overlays_order not in OVERLAY_ORDERS:
        raise EvalError(f"--overlays_order must be one of {OVERLAY_ORDERS}, got {cfg.overlays_order!r}")
    if cfg.overlays_order != "cases" and not cfg.overlays:
        raise EvalError("--overlays_order orders the --overlays grid: give --overlays DIR too")
    if cfg.include_normal and (cfg.run_split or cfg.layout != "busi"):
        raise EvalError("--include_normal reads BUSI's normal/ folder: use it with --layout busi "
                        "(--run_split takes it from the run's data_split.json)")


def run(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict:
    """Validates the data, loads the checkpoint, evaluates, writes every requested output and
    returns the report (the JSON's content). Raises DatasetError, CheckpointError or EvalError."""
    from hanet_jax.inference import ensemble
    from hanet_jax.checkpoints.loading import load_bundle

    _check_config(cfg)
    members = ensemble.member_dirs(cfg.checkpoint)  # the checkpoint, or an ensemble's members
    groups, held, run_info = None, None, {}
    if cfg.run_split and (cfg.split_from or cfg.source):
        # another run's held-out images (a model scored on another dataset's test set: every
        # member predicts every image), or one source's of a run of several sources
        examples, run_info = run_split_examples(cfg.split_from or members[0], cfg.run_split,
                                                source=cfg.source)
        held = None
        if len(members) > 1 and not cfg.split_from:
            held = [{ex.stem for ex in run_split_examples(m, cfg.run_split, source=cfg.source)[0]}
                    for m in members]
    if cfg.run_split and not (cfg.split_from or cfg.source):
        examples, run_info, held = held_out_examples(members, cfg.run_split)
    if cfg.run_split and isinstance(run_info["root"], list):
        raise EvalError(f"{run_info['source']} holds the {cfg.run_split} images of several "
                        f"sources {run_info.get('sources')}: give --source NAME")
    if cfg.run_split:
        groups = run_info.get("groups")
        source = run_info["source"]
        cfg = dataclasses.replace(cfg, data_dir=run_info["root"], layout=run_info["layout"],
                                  split=f"{cfg.run_split} of {source if isinstance(source, str) else ', '.join(source)}")
    else:
        examples = check.require_valid(cfg.data_dir, cfg.layout, cfg.split, include_normal=cfg.include_normal)
    try:
        classes = strata.resolve_classes(examples, layout=cfg.layout, root=cfg.data_dir,
                                         labels_path=cfg.labels)
    except strata.LabelsError as e:
        raise EvalError(f"--labels {e}") from e
    val_examples, val_info, val_held = [], None, None
    if cfg.threshold_from_split:
        val_examples, val_info, val_held = _threshold_examples(members, cfg.data_dir, cfg.layout,
                                                               cfg.threshold_from_split, examples)
    by_stem = {ex.stem: ex for ex in examples}
    unknown = [s for s in cfg.gradcam_stems if s not in by_stem]
    if unknown:
        raise EvalError(f"--gradcam_stems: {unknown} not in {cfg.data_dir} (split {cfg.split}); "
                        f"stems look like {list(by_stem)[:3]}")

    bundles = [load_bundle(m) for m in members]
    bundle = bundles[0]
    if len(bundles) > 1 and cfg.gradcam:
        raise EvalError(f"--gradcam explains one model; {cfg.checkpoint} is an ensemble of "
                        f"{len(bundles)}: give one member's directory ({members[0]})")
    if len(bundles) > 1 and cfg.model_resolution and len({tuple(b.image_size) for b in bundles}) > 1:
        raise EvalError(f"--model_resolution: the members of {cfg.checkpoint} have different input "
                        f"sizes {sorted({tuple(b.image_size) for b in bundles})}")
    if cfg.gradcam:
        from hanet_jax.eval import gradcam

        if not gradcam.has_sfeb(bundle.model):
            what = (f"variant {bundle.model.variant!r}" if hasattr(bundle.model, "variant")
                    else f"architecture {type(bundle.model).__name__}")
            raise EvalError(f"--gradcam: the model in {cfg.checkpoint} ({what}) has no SFEB blocks")
    score_size = tuple(bundle.image_size) if cfg.model_resolution else None
    common = dict(batch_size=cfg.batch_size, score_size=score_size)
    log(f"evaluating {len(examples)} images of {cfg.data_dir} (split {cfg.split}) with {cfg.checkpoint}")

    report = {
        "n_images": len(examples),
        "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(cfg.checkpoint),
        "model": {"architecture": (bundle.meta.get("model") or {}).get("architecture", "hanet"),
                  **({"variant": bundle.model.variant} if hasattr(bundle.model, "variant") else {}),
                  "image_size": list(bundle.image_size)},
        **({"ensemble": {"members": members, "averaging": ENSEMBLE_LABEL}} if len(members) > 1 else {}),
        "data": {"root": str(cfg.data_dir), "layout": cfg.layout, "split": cfg.split,
                 "scored_at": "model resolution" if score_size else "ground-truth mask resolution",
                 **({"score_size": list(score_size)} if score_size else {}),
                 **({"include_normal": True} if cfg.include_normal else {}),
                 **({"pack": run_info["pack"]} if run_info.get("pack") else {}),
                 **({"labels": str(cfg.labels)} if cfg.labels else {})},
        "bootstrap": {"n_resamples": cfg.bootstrap, "seed": cfg.seed, "level": 0.95,
                      "over": "images" if groups is None else "near-duplicate groups",
                      **({"n_groups": n_groups(groups.values())} if groups else {})},
    }
    variants = [("protocols", False)] + ([("protocols_tta", True)] if cfg.tta else [])
    all_rows: list[dict] = []
    plain = None
    for key, tta in variants:
        predict = ensemble.predictor(bundles, batch_size=cfg.batch_size, tta=tta, held_out=held)
        val_predict = (predict if len(bundles) == 1  # the same members, averaged per validation image
                       else ensemble.EnsemblePredictor(predict.predictors, val_held))
        threshold, post, source, choice = _fixed_threshold(cfg, val_predict, tta, val_examples, common, log)
        result = evaluate(predict, examples, protocols=cfg.protocols, threshold=threshold, postprocess=post,
                          n_bootstrap=cfg.bootstrap, seed=cfg.seed, suffix=TTA_SUFFIX if tta else "",
                          overlay_dir=None if tta else cfg.overlays, groups=groups, classes=classes,
                          overlays_order=cfg.overlays_order, **common)
        if "fixed" in result.summaries:
            fixed = result.summaries["fixed"]
            result.summaries["fixed"] = {"threshold": fixed.pop("threshold"), "threshold_source": source,
                                         "postprocess": fixed.pop("postprocess"),
                                         "postprocess_source": source if cfg.postprocess == "auto" else "argument",
                                         **fixed}
            if choice is not None:
                result.summaries["fixed"]["threshold_selection"] = {
                    **val_info, "n_images": choice.n_images, "criterion": "max mean per-image Dice",
                    "grid": list(choice.grid), "mean_dice": choice.mean_dice,
                    "mean_dice_by_postprocess": choice.mean_dice_by_postprocess}
        report[key] = {p: result.summaries[p] for p in cfg.protocols}
        all_rows += result.rows
        plain = plain or result

    if cfg.per_image:
        write_per_image_csv(cfg.per_image, all_rows)
    if cfg.gradcam:
        from hanet_jax.eval import gradcam

        stems = list(cfg.gradcam_stems) or _default_gradcam_stems(plain)
        named = [(s, layouts.read_image(by_stem[s].image_path)) for s in stems]
        report["gradcam"] = {"dir": str(cfg.gradcam), "stems": stems,
                             "files": gradcam.save_figures(bundle, named, cfg.gradcam)}
    write_json(cfg.out, report)
    return report


def _fixed_threshold(cfg: EvalConfig, predict, tta: bool, val_examples, common, log):
    """(threshold, post-processing, threshold source, ThresholdChoice or None) of "fixed"."""
    if cfg.threshold_from_split:
        candidates = POSTPROCESS if cfg.postprocess == "auto" else (cfg.postprocess,)
        choice = select_threshold(predict, val_examples, postprocess=candidates, **common)
        log(f"threshold {choice.threshold:.2f}, post-processing {choice.postprocess}, chosen on "
            f"{len(val_examples)} {cfg.threshold_from_split} images" + (" (TTA)" if tta else ""))
        return choice.threshold, choice.postprocess, cfg.threshold_from_split, choice
    if cfg.threshold is not None:
        return float(cfg.threshold), cfg.postprocess, "argument", None
    return 0.5, cfg.postprocess, "default", None


def _default_gradcam_stems(result: Evaluation) -> list[str]:
    """Best, median and worst image by Dice of the first protocol evaluated (deduplicated)."""
    first = next(iter(result.summaries))
    dice = {r["stem"]: r["dice"] for r in result.rows if r["protocol"] == first + result.suffix}
    if all(math.isnan(d) for d in dice.values()):
        return list(dice)[:1]
    return list(dict.fromkeys(stem for _, stem in viz.select_cases(dice)))
