"""Per-image segmentation metrics from confusion counts, their summaries and their CSV form.

Every output uses the names and the order of `METRIC_NAMES` (spec: evaluation.md):

    jaccard     = TP / (TP + FP + FN)
    dice        = 2TP / (2TP + FP + FN)
    sensitivity = TP / (TP + FN)
    specificity = TN / (TN + FP)
    precision   = TP / (TP + FP)
    accuracy    = (TP + TN) / (TP + FP + FN + TN)

A ratio whose denominator is zero is undefined and is reported as NaN, never as 0 or 1;
`summarize` leaves NaNs out of the mean and counts them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from hanet_jax import storage

METRIC_NAMES = ("jaccard", "dice", "sensitivity", "specificity", "precision", "accuracy")
COUNT_NAMES = ("TP", "FP", "FN", "TN")
# One row per (image, protocol); eval writes it, compare reads it.
PER_IMAGE_COLUMNS = ("stem", "protocol", "threshold", *COUNT_NAMES, *METRIC_NAMES)
# Written after those when the rows hold them (eval's rows do: `strata.py`, and the near-duplicate
# group where the run knows it, which `compare.py` pairs by); CSVs without them are still read,
# so older outputs and other writers keep working.
EXTRA_COLUMNS = ("class", "lesion_area", "group")


def as_bool_mask(mask, name: str = "mask") -> np.ndarray:
    """Bool view of a binary mask; numeric masks must hold only 0 and 1 (no silent rounding)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or contain only 0 and 1; "
                         f"found values in [{mask.min()}, {mask.max()}]")
    return mask.astype(bool)


def confusion_counts(pred_bool, gt_bool) -> dict[str, np.int64]:
    """Pixel counts TP, FP, FN, TN (int64) of a binary prediction against a binary ground truth."""
    pred = as_bool_mask(pred_bool, "pred")
    gt = as_bool_mask(gt_bool, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    tp = np.count_nonzero(pred & gt)
    fp = np.count_nonzero(pred & ~gt)
    fn = np.count_nonzero(~pred & gt)
    tn = pred.size - tp - fp - fn
    return {"TP": np.int64(tp), "FP": np.int64(fp), "FN": np.int64(fn), "TN": np.int64(tn)}


def _ratio(num, den) -> float:
    return float(num) / float(den) if den != 0 else math.nan


def metrics_from_counts(tp, fp, fn, tn) -> dict[str, float]:
    """The six metrics of the module docstring, as fractions, NaN where undefined."""
    tp, fp, fn, tn = (int(c) for c in (tp, fp, fn, tn))
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"counts must be non-negative, got TP={tp} FP={fp} FN={fn} TN={tn}")
    return {
        "jaccard": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def summarize(per_image_rows: Iterable[Mapping]) -> dict:
    """Dataset summary of per-image rows (each holding COUNT_NAMES and METRIC_NAMES).

    Returns {"n_images": N,
             "mean": per-metric nanmean over images (NaN if every image is undefined),
             "pooled": metrics of the summed counts,
             "n_undefined": per-metric number of images whose value is NaN (left out of "mean")}.
    """
    rows = list(per_image_rows)
    if not rows:
        raise ValueError("summarize needs at least one per-image row")
    values = {m: np.array([float(r[m]) for r in rows]) for m in METRIC_NAMES}
    n_undefined = {m: int(np.isnan(v).sum()) for m, v in values.items()}
    mean = {m: (float(np.mean(v[~np.isnan(v)])) if n_undefined[m] < len(v) else math.nan)
            for m, v in values.items()}
    totals = [sum(int(r[c]) for r in rows) for c in COUNT_NAMES]
    return {"n_images": len(rows), "mean": mean, "pooled": metrics_from_counts(*totals),
            "n_undefined": n_undefined}


def write_per_image_csv(path, rows: Sequence[Mapping]) -> None:
    """Write rows with PER_IMAGE_COLUMNS, in that order, then those of EXTRA_COLUMNS that any
    row holds (NaN is written as 'nan'; an unknown class, None, as an empty cell)."""
    extra = tuple(c for c in EXTRA_COLUMNS if any(c in row for row in rows))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PER_IMAGE_COLUMNS + extra, extrasaction="raise")
    writer.writeheader()
    for row in rows:
        values = {k: row[k] for k in PER_IMAGE_COLUMNS}
        values.update({k: "" if row.get(k) is None else row[k] for k in extra})
        writer.writerow(values)
    storage.write_bytes(path, text.getvalue().encode())


def read_per_image_csv(path) -> list[dict]:
    """Read a per-image CSV: counts as int, threshold and metrics as float ('' or 'nan' -> NaN);
    "class" and "group" ('' -> None) and "lesion_area" (float) where the file has them."""
    with io.StringIO(storage.path(path).read_text(), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PER_IMAGE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected {list(PER_IMAGE_COLUMNS)}")
        rows = []
        for raw in reader:
            row = {"stem": raw["stem"], "protocol": raw["protocol"]}
            for c in COUNT_NAMES:
                row[c] = int(raw[c])
            for c in ("threshold", *METRIC_NAMES):
                row[c] = float(raw[c]) if raw[c].strip() else math.nan
            if "class" in raw:
                row["class"] = raw["class"] or None
            if "lesion_area" in raw:
                row["lesion_area"] = float(raw["lesion_area"]) if raw["lesion_area"].strip() else math.nan
            if "group" in raw:
                row["group"] = raw["group"] or None
            rows.append(row)
    return rows
