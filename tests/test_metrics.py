"""Exact metric values on hand-made arrays, both protocols, summaries and the bootstrap."""

import math

import numpy as np
import pytest

from hanet_jax.eval.bootstrap import bootstrap_ci
from hanet_jax.eval.metrics import (
    METRIC_NAMES, PER_IMAGE_COLUMNS, confusion_counts, metrics_from_counts, read_per_image_csv,
    summarize, write_per_image_csv)
from hanet_jax.eval.protocols import evaluate_image, fixed_threshold, oracle_threshold
from hanet_jax.inference.postprocess import binarize

NAN = math.nan


def assert_metrics(row, expected):
    """expected: the six metrics in METRIC_NAMES order; NaN must be NaN."""
    got = [row[m] for m in METRIC_NAMES]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


def test_metric_names_and_formulas():
    assert METRIC_NAMES == ("jaccard", "dice", "sensitivity", "specificity", "precision", "accuracy")
    m = metrics_from_counts(tp=6, fp=2, fn=4, tn=8)
    assert list(m) == list(METRIC_NAMES)
    assert_metrics(m, [6 / 12, 12 / 18, 6 / 10, 8 / 10, 6 / 8, 14 / 20])


def test_undefined_ratios_are_nan_not_zero_or_one():
    # Empty ground truth and empty prediction: only specificity and accuracy are defined.
    assert_metrics(metrics_from_counts(0, 0, 0, 5), [NAN, NAN, NAN, 1.0, NAN, 1.0])
    # Everything predicted, everything tumour: no negatives, so specificity is undefined.
    assert_metrics(metrics_from_counts(5, 0, 0, 0), [1.0, 1.0, 1.0, NAN, 1.0, 1.0])
    with pytest.raises(ValueError):
        metrics_from_counts(-1, 0, 0, 0)


def test_confusion_counts():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    gt = np.array([[1, 0, 0], [1, 1, 0]], np.uint8)
    c = confusion_counts(pred, gt)
    assert c == {"TP": 2, "FP": 1, "FN": 1, "TN": 2}
    assert all(isinstance(v, np.int64) for v in c.values())
    with pytest.raises(ValueError, match="only 0 and 1"):
        confusion_counts(pred, gt * 255)
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_counts(pred, gt[:, :2])


# prob and gt used below: thresholds (increasing) 0.125, 0.5, 0.75, 0.875.
PROB = np.array([[0.875, 0.75], [0.5, 0.125]], np.float32)
GT = np.array([[1, 1], [0, 0]], bool)


def test_fixed_protocol():
    assert np.array_equal(fixed_threshold(PROB, GT), [[True, True], [True, False]])
    row = evaluate_image(PROB, GT, "fixed")   # prob >= 0.5: TP 2, FP 1, FN 0, TN 1
    assert (row["threshold"], row["TP"], row["FP"], row["FN"], row["TN"]) == (0.5, 2, 1, 0, 1)
    assert_metrics(row, [2 / 3, 0.8, 1.0, 0.5, 2 / 3, 0.75])
    assert evaluate_image(PROB, GT, "fixed", threshold=0.8)["TP"] == 1


def test_oracle_protocol():
    # F1 by threshold: 0.125 -> 2/3, 0.5 -> 0.8, 0.75 -> 1, 0.875 -> 2/3.
    assert oracle_threshold(PROB, GT) == 0.75
    row = evaluate_image(PROB, GT, "paper_oracle", threshold=0.1)  # threshold is ignored
    assert row["threshold"] == 0.75
    assert_metrics(row, [1, 1, 1, 1, 1, 1])


def test_oracle_tie_takes_the_lowest_threshold():
    # F1 at 0.875 (TP 1, FN 1) and at 0.5 (TP 2, FP 2) are both 2/3, bit for bit in sklearn's
    # 2PR/(P+R); np.argmax over increasing thresholds takes 0.5. Ties in prob stay together.
    prob = np.array([0.875, 0.5, 0.5, 0.5, 0.125], np.float32)
    gt = np.array([1, 0, 0, 1, 0], bool)
    assert oracle_threshold(prob, gt) == 0.5
    row = evaluate_image(prob, gt, "paper_oracle")
    assert (row["TP"], row["FP"], row["FN"], row["TN"]) == (2, 2, 0, 1)


def test_oracle_ignores_undefined_f1():
    # The highest value is background: F1 there is 0/0. A bare np.argmax would pick it.
    prob = np.array([0.875, 0.75, 0.5], np.float32)
    gt = np.array([0, 1, 0], bool)
    assert oracle_threshold(prob, gt) == 0.75


def test_empty_ground_truth():
    prob = np.array([[0.25, 0.75], [0.5, 0.125]], np.float32)
    gt = np.zeros((2, 2), bool)
    # Oracle: F1 = 0 everywhere (sklearn sets recall = 1), argmax -> lowest probability,
    # so every pixel is predicted.
    row = evaluate_image(prob, gt, "paper_oracle")
    assert row["threshold"] == 0.125 and (row["TP"], row["FP"], row["FN"], row["TN"]) == (0, 4, 0, 0)
    assert_metrics(row, [0, 0, NAN, 0, 0, 0])
    row = evaluate_image(prob, gt, "fixed")  # 0.75 and 0.5 predicted
    assert_metrics(row, [0, 0, NAN, 0.5, 0, 0.5])
    row = evaluate_image(prob * 0, gt, "fixed")  # nothing predicted, nothing there
    assert_metrics(row, [NAN, NAN, NAN, 1, NAN, 1])


def test_empty_prediction():
    prob = np.full((2, 3), 0.25, np.float32)
    gt = np.array([[1, 0, 0], [0, 0, 0]], bool)
    assert_metrics(evaluate_image(prob, gt, "fixed"), [0, 0, 0, 1, NAN, 5 / 6])


def test_constant_probability_map():
    prob = np.full((2, 3), 0.25, np.float32)
    gt = np.array([[1, 1, 0], [0, 0, 0]], bool)
    row = evaluate_image(prob, gt, "paper_oracle")  # the only threshold: predict everything
    assert row["threshold"] == 0.25
    assert_metrics(row, [2 / 6, 4 / 8, 1, 0, 2 / 6, 2 / 6])


def test_all_tumour_ground_truth():
    prob = np.array([0.75, 0.25, 0.5], np.float32)
    gt = np.ones(3, bool)
    assert oracle_threshold(prob, gt) == 0.25  # precision is 1 everywhere, recall peaks lowest


def _sklearn_oracle_by_loop(prob, gt):
    """sklearn >= 1.1 precision_recall_curve + argmax of 2PR/(P+R), NaN ignored, one threshold
    at a time: the slow reference for the vectorised version."""
    best_t, best_f1, n_pos = None, -np.inf, gt.sum()
    for t in np.unique(prob):   # increasing, so strict > keeps the first maximum
        pred = prob >= t
        tp, fp = np.sum(pred & gt), np.sum(pred & ~gt)
        p, r = tp / (tp + fp), (tp / n_pos if n_pos else 1.0)
        f1 = 2 * p * r / (p + r) if p + r > 0 else -np.inf
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def test_oracle_matches_per_threshold_loop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        prob = (rng.integers(0, 8, n) / 8).astype(np.float32)  # many ties
        gt = rng.random(n) < rng.random()
        assert oracle_threshold(prob, gt) == _sklearn_oracle_by_loop(prob, gt)


def test_oracle_input_checks():
    with pytest.raises(ValueError, match="finite"):
        oracle_threshold(np.array([0.5, np.nan]), np.array([1, 0]))
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_image(PROB, GT, "oracle")


def test_binarize_compares_in_the_probability_dtype():
    prob = np.array([0.7], np.float32)   # 0.699999988 < 0.7 in float64
    assert binarize(prob, 0.7)[0]        # but float32(0.7) >= float32(0.7)


def test_summarize_mean_pooled_and_undefined_counts():
    counts = [(2, 0, 0, 2), (0, 1, 0, 3), (1, 1, 2, 0)]
    rows = [{**dict(zip(("TP", "FP", "FN", "TN"), c)), **metrics_from_counts(*c)} for c in counts]
    s = summarize(rows)
    assert s["n_images"] == 3
    # Sensitivity: 1, NaN (no tumour), 1/3 -> mean of the two defined values.
    assert s["mean"]["sensitivity"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["n_undefined"] == {"jaccard": 0, "dice": 0, "sensitivity": 1, "specificity": 0,
                                "precision": 0, "accuracy": 0}
    assert s["mean"]["dice"] == pytest.approx((1 + 0 + 2 / 5) / 3)
    # Pooled: TP 3, FP 2, FN 2, TN 5.
    assert s["pooled"]["dice"] == pytest.approx(6 / 10)
    assert s["pooled"]["jaccard"] == pytest.approx(3 / 7)
    all_nan = summarize([{**dict(zip(("TP", "FP", "FN", "TN"), (0, 0, 0, 4))),
                          **metrics_from_counts(0, 0, 0, 4)}])
    assert math.isnan(all_nan["mean"]["dice"]) and all_nan["n_undefined"]["dice"] == 1


def test_per_image_csv_round_trip(tmp_path):
    rows = [{"stem": "a", "protocol": "fixed", **evaluate_image(PROB, GT, "fixed")},
            {"stem": "b", "protocol": "fixed",
             **evaluate_image(PROB, np.zeros_like(GT), "fixed")}]
    path = tmp_path / "per_image.csv"
    write_per_image_csv(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(PER_IMAGE_COLUMNS)
    back = read_per_image_csv(path)
    for r, b in zip(rows, back):
        assert b["stem"] == r["stem"] and b["TP"] == r["TP"]
        np.testing.assert_equal([b[m] for m in METRIC_NAMES], [r[m] for m in METRIC_NAMES])


def test_bootstrap_ci():
    values = np.r_[np.linspace(0.5, 0.9, 50), NAN, NAN]
    lo, hi = bootstrap_ci(values, seed=3)
    assert (lo, hi) == bootstrap_ci(values, seed=3)
    assert (lo, hi) != bootstrap_ci(values, seed=4)
    assert lo < 0.7 < hi and hi - lo < 0.1
    assert bootstrap_ci([0.4] * 5) == (0.4, 0.4)
    assert all(math.isnan(x) for x in bootstrap_ci([NAN, NAN]))
    # The same n_resamples x n draws, done by hand.
    clean = values[~np.isnan(values)]
    means = clean[np.random.default_rng(3).integers(0, 50, (2000, 50))].mean(1)
    assert (lo, hi) == tuple(np.quantile(means, [0.025, 0.975]))


def test_grouped_bootstrap_resamples_whole_groups():
    originals = np.random.default_rng(0).uniform(0.3, 0.9, 20)
    copies, groups = np.repeat(originals, 5), np.repeat(np.arange(10, 30), 5)  # sorted as text too
    grouped = bootstrap_ci(copies, seed=1, groups=groups)
    # Five exact copies of each of 20 images carry the information of 20 images, not 100.
    assert grouped == pytest.approx(bootstrap_ci(originals, seed=1), abs=1e-12)
    per_image = bootstrap_ci(copies, seed=1)
    assert grouped[1] - grouped[0] > 1.8 * (per_image[1] - per_image[0])
    # NaNs are dropped before grouping; a group left empty just disappears.
    with_nan = np.r_[copies, NAN]
    assert bootstrap_ci(with_nan, seed=1, groups=np.r_[groups, 99]) == grouped
    with pytest.raises(ValueError, match="group ids"):
        bootstrap_ci(copies, groups=groups[:-1])
