"""Results by lesion class and lesion size, and the lesions a model misses or invents.

A mean Dice hides what a radiologist asks first: does it work on malignant lesions, on small
ones, and how many lesions does it not find at all? This module holds every rule behind those
figures, so `evaluate.py` only calls it:

- **Lesion class** (`resolve_classes`), where it is known, in this order:
  1. a user's CSV of stem -> class (`eval.py --labels FILE`);
  2. the dataset's class folders (the BUSI raw layout: benign/, malignant/, normal/);
  3. the authors' processed BUSI release's numbering (spec: data.md): originals 1..437 are
     benign, 438..647 malignant, and copy `i + 647k` (k = 1..4) has the class of original `i`.
     Applied to a `processed` folder named BUSI whose stems are all release numbers 1..3235.
  Otherwise the class is unknown (UDIAT's files do not record it): no class strata, and the
  output says why, which is not an error.
- **Lesion size** (`size_edges`): terciles of the ground-truth lesion's area as a fraction of the
  image, over the scored images' lesions; the two edges are reported. Bins: small `<= e1`,
  medium `(e1, e2]`, large `> e2`.
- **Missed lesions** (`is_found`): a lesion is found when the prediction overlaps it with
  Dice >= `FOUND_DICE` (0.1); below that the model did not find it at all.
- **Phantom lesions**: an image whose ground truth is empty (BUSI's normal class) is not a
  lesion. It is left out of the class, size and missed figures and counted in the share of
  lesion-free images with any predicted pixel.

Every interval resamples the same near-duplicate groups as the overall intervals
(`bootstrap.bootstrap_ci`): copies of one original stay one unit in every stratum.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hanet_jax import storage
from hanet_jax.data import audit, layouts
from hanet_jax.eval.bootstrap import bootstrap_ci

FOUND_DICE = 0.1  # a lesion scored below this Dice was not found
SIZE_BINS = ("small", "medium", "large")
STRATA_METRICS = ("dice", "jaccard")

# The processed BUSI release (spec: data.md): 647 originals, then 4 copies of each.
RELEASE_ORIGINALS = 647
RELEASE_BENIGN = 437  # originals 1..437 benign, 438..647 malignant
RELEASE_LAST = 5 * RELEASE_ORIGINALS  # the original and its 4 copies: stems 1..3235
RELEASE_RULE = ("BUSI release numbering: originals 1-437 benign, 438-647 malignant; "
                "copy i+647k has the class of original i")
PAPER_TEST_STEMS = tuple(str(k) for k in range(1, 81))  # the paper's 80 BUSI test images


class LabelsError(ValueError):
    """A --labels file that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ClassLabels:
    """Each evaluated stem's lesion class (`by_stem`), or None with the reason it is unknown.

    `source` says where the classes came from (or, when unknown, why not); `expected` lists the
    classes the source can hold, so an evaluated set without any malignant lesion says so.
    """

    by_stem: Mapping[str, str] | None
    source: str
    expected: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.by_stem is not None

    def of(self, stem: str) -> str | None:
        return self.by_stem.get(stem) if self.by_stem is not None else None


# --------------------------------------------------------------------------- lesion class


def busi_release_class(stem: str) -> str | None:
    """"benign" or "malignant" for a stem of the processed BUSI release (`N`, N in 1..3235),
    None for any other stem: copy i + 647k carries original i's class (`audit.release_original`,
    the one place the release's copy numbering lives)."""
    if not re.fullmatch(r"[1-9][0-9]*", stem) or int(stem) > RELEASE_LAST:
        return None
    return "benign" if int(audit.release_original(stem, "busi")) <= RELEASE_BENIGN else "malignant"


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """stem -> class from a CSV of `stem,class` rows (an optional `stem,class` header first).

    The file is the user's, so every problem is one `LabelsError` line naming the file (and the
    line), never a traceback: unreadable, empty, a row without two fields, a stem given two
    different classes.
    """
    try:
        text = storage.path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"{path}: cannot read the labels file: {e}") from e
    labels: dict[str, str] = {}
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        raise LabelsError(f"{path}: not a CSV file: {e}") from e
    for line, row in enumerate(rows, start=1):
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        if line == 1 and [f.lower() for f in fields] == ["stem", "class"]:
            continue
        if len(fields) != 2 or not all(fields):
            raise LabelsError(f"{path}, line {line}: expected 'stem,class', got {row}")
        stem, cls = fields
        if labels.get(stem, cls) != cls:
            raise LabelsError(f"{path}, line {line}: stem {stem!r} is given class {cls!r} and "
                              f"{labels[stem]!r}")
        labels[stem] = cls
    if not labels:
        raise LabelsError(f"{path}: no 'stem,class' rows")
    return labels


def resolve_classes(examples: Sequence[layouts.Example], *, layout: str | None = None,
                    root: str | os.PathLike | None = None,
                    labels_path: str | os.PathLike | None = None) -> ClassLabels:
    """Each example's lesion class, by the first rule of the module docstring that applies.

    Raises `LabelsError` when `labels_path` is unreadable or lacks an evaluated stem: a labels
    file that covers only part of the images would make the class strata silently partial.
    """
    stems = [ex.stem for ex in examples]
    if labels_path is not None:
        labels = read_labels(labels_path)
        missing = [s for s in stems if s not in labels]
        if missing:
            raise LabelsError(f"{labels_path}: no class for {len(missing)} of the {len(stems)} "
                              f"evaluated image(s), e.g. {missing[:3]}")
        return ClassLabels({s: labels[s] for s in stems}, f"labels file {labels_path}")
    if examples and all(ex.label for ex in examples):
        expected = layouts.BUSI_CLASSES if layout == "busi" else ()
        return ClassLabels({ex.stem: ex.label for ex in examples}, "the dataset's class folders",
                           expected)
    if layout == "processed" and root is not None and Path(root).resolve().name.lower() == "busi":
        release = {s: busi_release_class(s) for s in stems}
        if all(release.values()):
            return ClassLabels(release, RELEASE_RULE, layouts.BUSI_CLASSES)
        odd = [s for s, c in release.items() if c is None]
        return ClassLabels(None, f"lesion class unknown: {root} is named BUSI but stems such as "
                                 f"{odd[:3]} are not release numbers 1-{RELEASE_LAST}; give "
                                 f"--labels FILE (CSV: stem,class)")
    where = f"the {layout} layout at {root}" if layout else "these examples"
    return ClassLabels(None, f"lesion class unknown: {where} records no class; give --labels FILE "
                             f"(CSV: stem,class)")


# --------------------------------------------------------------------------- size, found


def lesion_area(gt: np.ndarray) -> float:
    """The ground-truth lesion's area as a fraction of the image (0.0: a lesion-free image)."""
    gt = np.asarray(gt, bool)
    return float(np.count_nonzero(gt)) / gt.size


def size_edges(areas: Iterable[float]) -> tuple[float, float] | None:
    """The terciles (numpy's linear quantiles at 1/3 and 2/3) of the lesions' areas; None with
    fewer than 3 lesions, where three bins cannot each hold one."""
    areas = np.asarray([a for a in areas if a > 0], np.float64)
    if areas.size < 3:
        return None
    low, high = np.quantile(areas, [1 / 3, 2 / 3])
    return float(low), float(high)


def size_bin(area: float, edges: tuple[float, float]) -> str:
    """"small" (area <= e1), "medium" (e1 < area <= e2) or "large" (area > e2)."""
    return SIZE_BINS[0] if area <= edges[0] else SIZE_BINS[1] if area <= edges[1] else SIZE_BINS[2]


def is_found(row: Mapping) -> bool:
    """A lesion is found when its prediction reaches Dice >= FOUND_DICE."""
    return float(row["dice"]) >= FOUND_DICE


def has_prediction(row: Mapping) -> bool:
    """Any predicted pixel (on a lesion-free image every one is a phantom lesion)."""
    return int(row["TP"]) + int(row["FP"]) > 0


# --------------------------------------------------------------------------- summaries


CI = Callable[[Sequence[float], Sequence[Mapping]], list[float]]


def _group_ci(n_bootstrap: int, seed: int, groups: Mapping[str, Any] | None) -> CI:
    """A CI function over a subset of rows that resamples the rows' near-duplicate groups."""

    def ci(values: Sequence[float], rows: Sequence[Mapping]) -> list[float]:
        if n_bootstrap <= 0 or not rows:
            return [math.nan, math.nan]
        ids = [groups[r["stem"]] for r in rows] if groups is not None else None
        return list(bootstrap_ci(values, n_bootstrap, seed, groups=ids))

    return ci


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def lesion_entry(rows: Sequence[Mapping], ci: CI) -> dict:
    """One stratum of lesion images: mean Dice and Jaccard with CIs, and how many it missed."""
    entry: dict[str, Any] = {"n_lesions": len(rows), "mean": {}, "ci95": {}}
    for m in STRATA_METRICS:
        values = [float(r[m]) for r in rows]
        entry["mean"][m] = _mean(values)
        entry["ci95"][m] = ci(values, rows)
    found = [float(is_found(r)) for r in rows]
    entry["n_missed"] = len(rows) - int(sum(found))
    entry["found_rate"] = _mean(found)
    entry["found_rate_ci95"] = ci(found, rows)
    return entry


def lesion_free_entry(rows: Sequence[Mapping], ci: CI) -> dict | None:
    """The share of lesion-free images with a predicted lesion (None when there are none)."""
    if not rows:
        return None
    flagged = [float(has_prediction(r)) for r in rows]
    return {"n_images": len(rows), "n_with_prediction": int(sum(flagged)),
            "share": _mean(flagged), "share_ci95": ci(flagged, rows)}


def summarize_strata(rows: Sequence[Mapping], classes: ClassLabels, *, n_bootstrap: int = 2000,
                     seed: int = 0, groups: Mapping[str, Any] | None = None) -> dict:
    """The strata of one protocol's per-image rows (each with "class" and "lesion_area").

    {"found_dice", "lesions" (all lesion images), "class_source", ["class_unknown"],
     "class": {class: entry}, "classes_absent", "size_edges", "size": {bin: entry},
     "lesion_free": {...} or None}; an entry is `lesion_entry`'s.
    """
    ci = _group_ci(n_bootstrap, seed, groups)
    lesions = [r for r in rows if r["lesion_area"] > 0]
    out: dict[str, Any] = {"found_dice": FOUND_DICE, "lesions": lesion_entry(lesions, ci)}
    out["class_source"] = classes.source if classes.known else None
    if not classes.known:
        out["class_unknown"] = classes.source
    names = sorted({r["class"] for r in lesions if r.get("class")}) if classes.known else []
    out["class"] = {c: lesion_entry([r for r in lesions if r["class"] == c], ci) for c in names}
    out["classes_absent"] = [c for c in classes.expected if c not in out["class"]]
    edges = size_edges(r["lesion_area"] for r in lesions)
    out["size_edges"] = list(edges) if edges else None
    out["size"] = ({b: lesion_entry([r for r in lesions if size_bin(r["lesion_area"], edges) == b], ci)
                    for b in SIZE_BINS} if edges else {})
    out["lesion_free"] = lesion_free_entry([r for r in rows if r["lesion_area"] == 0], ci)
    return out


# --------------------------------------------------------------------------- text


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _interval(lo, hi, scale: float = 1.0, digits: int = 3) -> str:
    lo, hi = _num(lo), _num(hi)
    if math.isnan(lo):
        return ""
    return f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def missed_text(entry: Mapping) -> str:
    """"54 of 325 (16.6% [12.4, 21.0])": missed lesions, with the interval of the missed share
    (one minus the found rate's interval)."""
    n, m = entry["n_lesions"], entry["n_missed"]
    if not n:
        return "0 of 0"
    lo, hi = entry["found_rate_ci95"]
    ci = "" if lo is None or math.isnan(_num(lo)) else _interval(1 - _num(hi), 1 - _num(lo), 100, 1)
    return f"{m} of {n} ({100 * m / n:.1f}%{ci})"


def lesion_free_text(entry: Mapping) -> str:
    """"3 of 20 lesion-free images with a predicted lesion (15.0% [5.0, 30.0])"."""
    lo, hi = entry["share_ci95"]
    return (f"{entry['n_with_prediction']} of {entry['n_images']} lesion-free images with a "
            f"predicted lesion ({100 * _num(entry['share']):.1f}%{_interval(lo, hi, 100, 1)})")


def size_labels(edges: Sequence[float]) -> dict[str, str]:
    """The bins named with their edges in percent of the image."""
    e1, e2 = (100 * e for e in edges)
    return {"small": f"small <={e1:.2f}%", "medium": f"medium {e1:.2f}-{e2:.2f}%",
            "large": f"large >{e2:.2f}%"}


def format_table(strata: Mapping, title: str) -> list[str]:
    """The strata of one protocol as a short text table (what eval.py prints)."""
    lines = [f"{title}: lesions by class and size (missed: Dice < {strata['found_dice']})",
             f"  {'stratum':22s} {'n':>5s}  {'Dice [95% CI]':24s} {'Jaccard [95% CI]':24s} missed [95% CI]"]

    def row(name: str, e: Mapping) -> str:
        cells = [f"{_num(e['mean'][m]):.3f}{_interval(*e['ci95'][m])}" for m in STRATA_METRICS]
        return f"  {name:22s} {e['n_lesions']:5d}  {cells[0]:24s} {cells[1]:24s} {missed_text(e)}"

    lines.append(row("all lesions", strata["lesions"]))
    for name, e in strata["class"].items():
        lines.append(row(name, e))
    if strata["size_edges"]:
        labels = size_labels(strata["size_edges"])
        for name, e in strata["size"].items():
            lines.append(row(labels[name], e))
    if strata["lesion_free"]:
        lines.append("  " + lesion_free_text(strata["lesion_free"]))
    if strata["class_source"]:
        lines.append(f"  class from {strata['class_source']}")
    else:
        lines.append(f"  {strata['class_unknown']}")
    if strata["classes_absent"]:
        lines.append(f"  no {' or '.join(strata['classes_absent'])} lesion among the scored images")
    if strata["size_edges"]:
        e1, e2 = (100 * e for e in strata["size_edges"])
        lines.append(f"  size terciles of the lesion's area: edges {e1:.2f}% and {e2:.2f}% of the image")
    else:
        lines.append("  no size terciles: fewer than 3 lesions")
    return lines
