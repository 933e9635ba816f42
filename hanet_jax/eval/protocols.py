"""How a probability map becomes a binary mask: the two evaluation protocols (spec: evaluation.md).

- "fixed": one threshold for every image (0.5, or one chosen on the validation split).
- "paper_oracle": per image, the threshold with the best F1 against that image's OWN ground
  truth, as the release did with sklearn's `precision_recall_curve` + `np.argmax`. It grades the
  answer with the answer; report it only next to "fixed", labelled as an oracle.

Both binarise with `prob >= threshold`. "fixed" may then post-process the mask
(`postprocess.py`, e.g. keep the largest component); the oracle stays the release's.
"""

from __future__ import annotations

import numpy as np

from hanet_jax.inference.postprocess import binarize, fixed_mask
from hanet_jax.eval.metrics import as_bool_mask, confusion_counts, metrics_from_counts

PROTOCOLS = ("fixed", "paper_oracle")


def fixed_threshold(prob, gt=None, threshold: float = 0.5) -> np.ndarray:
    """The "fixed" protocol: the mask `prob >= threshold`; gt is never looked at."""
    del gt
    return binarize(prob, threshold)


def _pr_curve(prob: np.ndarray, gt: np.ndarray):
    """sklearn >= 1.1 `precision_recall_curve(gt, prob)` without the final (P=1, R=0) point.

    Candidate thresholds are the distinct probability values, in INCREASING order; at each,
    the prediction is `prob >= t`. Counts come from one descending sort and a cumulative sum:
    for the k-th distinct value (descending) ending at sorted index i, TP = cumsum(gt)[i] and
    FP = i + 1 - TP. As in sklearn: precision = TP / (TP + FP) (never 0/0 here, since at least
    one pixel is predicted), recall = TP / P, and recall = 1 everywhere when P = 0 (sklearn
    warns "No positive class found in y_true" and sets it so).
    """
    scores = prob.ravel()
    labels = gt.ravel()
    order = np.argsort(scores)[::-1]  # order within a run of ties does not affect its counts
    scores = scores[order]
    # Last index of each run of equal scores (descending), then the curve's last point.
    ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels[order], dtype=np.float64)[ends]
    fps = 1.0 + ends - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones_like(tps)
    return precision[::-1], recall[::-1], scores[ends][::-1]


def oracle_threshold(prob, gt) -> float:
    """The "paper_oracle" threshold: argmax of F1 over this image's own precision-recall curve.

    F1 = 2·P·R / (P + R), evaluated with sklearn's float arithmetic so that exact ties break as
    the release's did: `np.argmax` takes the FIRST maximum in sklearn's threshold order, which is
    increasing, so among equal-F1 thresholds the LOWEST wins (the larger predicted region).
    Points where F1 is undefined (P + R = 0, i.e. TP = 0) are ignored. (A bare `np.argmax` would
    pick the first NaN instead; every such point has F1 = 0 in the limit, and for a non-empty
    ground truth the lowest threshold has TP > 0, so ignoring them picks the true best F1.)
    sklearn's appended end point (P=1, R=0) has F1 = 0 and no threshold; it can never be the
    first maximum and is left out.

    Empty ground truth (no positive pixel): a choice, made to match the release. sklearn sets
    recall = 1 and precision = 0 at every threshold, so F1 = 0 everywhere and `np.argmax`
    returns index 0: the LOWEST probability, i.e. every pixel is predicted positive
    (TP = 0, FN = 0, FP = all, so Jaccard = Dice = specificity = precision = accuracy = 0 and
    sensitivity = NaN). This reproduces sklearn >= 1.1; sklearn < 1.1 gave recall = NaN there.
    """
    prob = np.asarray(prob)
    gt = as_bool_mask(gt, "gt")
    if prob.shape != gt.shape:
        raise ValueError(f"prob and gt shapes differ: {prob.shape} vs {gt.shape}")
    if prob.size == 0:
        raise ValueError("oracle_threshold needs a non-empty probability map")
    if not np.isfinite(prob).all():
        raise ValueError("probabilities must be finite (sklearn rejects NaN/inf as well)")
    precision, recall, thresholds = _pr_curve(prob, gt)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where(np.isnan(f1), -np.inf, f1)
    return float(thresholds[int(np.argmax(f1))])


def evaluate_image(prob, gt, protocol: str, threshold: float = 0.5, postprocess: str = "none") -> dict:
    """Binarise `prob` under `protocol` and score it against `gt`.

    Returns {"threshold", "TP", "FP", "FN", "TN", *METRIC_NAMES}. `threshold` and
    `postprocess` are used by "fixed" only; "paper_oracle" records the threshold it picked.
    """
    if protocol == "fixed":
        t = float(threshold)
        mask = fixed_mask(prob, t, postprocess)
    elif protocol == "paper_oracle":
        t = oracle_threshold(prob, gt)
        mask = binarize(prob, t)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    counts = confusion_counts(mask, gt)
    metrics = metrics_from_counts(counts["TP"], counts["FP"], counts["FN"], counts["TN"])
    return {"threshold": t, **counts, **metrics}
