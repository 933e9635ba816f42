"""Compare two models on paired per-image scores: Wilcoxon signed-rank test + bootstrap CIs.

    python -m hanet_jax.eval.compare A.csv B.csv [--metric=dice] [--protocol=fixed] [--json=OUT]
        [--n_resamples=2000] [--seed=0]

A.csv and B.csv are per-image CSVs (metrics.PER_IMAGE_COLUMNS) of the same test images.
Rows are paired by stem within the chosen protocol; a stem present in one file only is an
error (exit status 2). Pairs where either score is NaN (metric undefined) are dropped and
counted. Differences are B - A throughout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import scipy.stats
from absl import flags

from hanet_jax import command_line
from hanet_jax.json_files import write_json
from hanet_jax.eval.bootstrap import bootstrap_ci
from hanet_jax.eval.metrics import METRIC_NAMES, read_per_image_csv
from hanet_jax.eval.protocols import PROTOCOLS


class UnpairedStemsError(ValueError):
    """The two files do not hold the same images."""


def _scores_by_stem(rows: Sequence[dict], metric: str, protocol: str, label: str) -> dict[str, float]:
    rows = [r for r in rows if r["protocol"] == protocol]
    if not rows:
        raise ValueError(f"{label}: no rows with protocol {protocol!r}")
    scores: dict[str, float] = {}
    for r in rows:
        if r["stem"] in scores:
            raise ValueError(f"{label}: stem {r['stem']!r} appears twice for protocol {protocol!r}")
        scores[r["stem"]] = r[metric]
    return scores


def paired_scores(rows_a, rows_b, metric: str = "dice", protocol: str = "fixed"):
    """(stems, a, b, n_dropped): scores paired by stem, sorted by stem, NaN pairs dropped."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRIC_NAMES}")
    sa = _scores_by_stem(rows_a, metric, protocol, "A")
    sb = _scores_by_stem(rows_b, metric, protocol, "B")
    only_a, only_b = sorted(sa.keys() - sb.keys()), sorted(sb.keys() - sa.keys())
    if only_a or only_b:
        raise UnpairedStemsError(f"unpaired stems: only in A {only_a}, only in B {only_b}")
    stems = sorted(sa)
    a = np.array([sa[s] for s in stems], dtype=np.float64)
    b = np.array([sb[s] for s in stems], dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    return [s for s, k in zip(stems, keep) if k], a[keep], b[keep], int((~keep).sum())


def rank_biserial(diff) -> float:
    """Matched-pairs rank-biserial correlation r = (R+ - R-) / (R+ + R-).

    R+ and R- are the sums of the ranks of |d| (average ranks for ties) over the positive and
    the negative nonzero differences; zeros are dropped as in Wilcoxon's default
    (zero_method="wilcox"). r lies in [-1, 1], positive when B tends to beat A.
    NaN when every difference is zero.
    """
    diff = np.asarray(diff, dtype=np.float64)
    diff = diff[diff != 0]
    if diff.size == 0:
        return math.nan
    ranks = scipy.stats.rankdata(np.abs(diff))
    return float((ranks[diff > 0].sum() - ranks[diff < 0].sum()) / ranks.sum())


def compare_scores(a, b, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Paired statistics of scores b vs a (same images, same order, no NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty 1-D score arrays of equal length, got {a.shape}, {b.shape}")
    diff = b - a
    # Two-sided, zero differences dropped, exact or normal p-value chosen by scipy ("auto").
    test = scipy.stats.wilcoxon(b, a)
    return {
        "n_pairs": int(a.size),
        "mean_a": float(a.mean()), "ci_a": list(bootstrap_ci(a, n_resamples, seed)),
        "mean_b": float(b.mean()), "ci_b": list(bootstrap_ci(b, n_resamples, seed)),
        "median_diff": float(np.median(diff)),
        "wilcoxon_statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "rank_biserial": rank_biserial(diff),
    }


def _report(r: dict) -> str:
    return "\n".join([
        f"{r['metric']} (protocol {r['protocol']}): n = {r['n_pairs']} paired images, "
        f"{r['n_dropped_nan']} dropped (NaN in A or B)",
        f"A {r['file_a']}: mean {r['mean_a']:.4f}  95% CI [{r['ci_a'][0]:.4f}, {r['ci_a'][1]:.4f}]",
        f"B {r['file_b']}: mean {r['mean_b']:.4f}  95% CI [{r['ci_b'][0]:.4f}, {r['ci_b'][1]:.4f}]",
        f"median difference (B - A): {r['median_diff']:+.4f}",
        f"Wilcoxon signed-rank: statistic {r['wilcoxon_statistic']:g}, p = {r['p_value']:.4g}",
        f"rank-biserial r (positive: B better): {r['rank_biserial']:+.3f}",
    ])


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("metric", "dice", METRIC_NAMES, "the per-image score compared", flag_values=fv)
    flags.DEFINE_enum("protocol", "fixed", PROTOCOLS + tuple(f"{p}+tta" for p in PROTOCOLS),
                      "eval.py writes '+tta' rows for test-time-augmented predictions", flag_values=fv)
    flags.DEFINE_integer("n_resamples", 2000, "bootstrap resamples", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "bootstrap seed", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result as JSON here", flag_values=fv)


COMMAND = command_line.Command("python -m hanet_jax.eval.compare", __doc__, _define_flags,
                               positional=("A_CSV", "B_CSV"))


def main(argv: Sequence[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    try:
        stems, a, b, n_dropped = paired_scores(read_per_image_csv(args.a_csv), read_per_image_csv(args.b_csv),
                                               args.metric, args.protocol)
        if not stems:
            raise ValueError(f"no pair left with a defined {args.metric} ({n_dropped} dropped as NaN)")
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"file_a": args.a_csv, "file_b": args.b_csv, "metric": args.metric,
              "protocol": args.protocol, "n_dropped_nan": n_dropped,
              **compare_scores(a, b, args.n_resamples, args.seed)}
    print(_report(result))
    if args.json:
        write_json(args.json, result)  # undefined values (r when every difference is 0): null
    return 0


def run() -> None:
    """The `hanet-compare` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
