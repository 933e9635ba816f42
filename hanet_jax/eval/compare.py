"""Compare two models on paired scores: Wilcoxon signed-rank test over groups + bootstrap CIs.

    python -m hanet_jax.eval.compare A.csv B.csv [--metric=dice] [--protocol=fixed] [--json=OUT]
        [--group_by=auto|column|busi_release|udiat_release|image] [--n_resamples=2000] [--seed=0]

A.csv and B.csv are per-image CSVs (metrics.PER_IMAGE_COLUMNS) of the same test images.
Rows are paired by stem within the chosen protocol; a stem present in one file only is an
error (exit status 2). Pairs where either score is NaN (metric undefined) are dropped and
counted. Differences are B - A throughout.

The test sets hold copies: each BUSI original appears 5 times and each UDIAT original 19 times
in the processed release. A signed-rank test over copies counts one lesion many times and makes
the p-value far too small, so the test runs on per-group means: one value per original, where
the group is the CSV's `group` column (eval.py writes the run's near-duplicate groups), or the
release's copy numbering (`busi_release`, `udiat_release`: `data.audit.release_original`). The
per-image p-value is reported beside it, for contrast only. `--group_by image` (or `auto` on a
CSV without groups) tests per image and says so. The CIs resample the same groups.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np
import scipy.stats
from absl import flags

from hanet_jax import command_line
from hanet_jax.data.audit import release_original
from hanet_jax.eval.bootstrap import bootstrap_ci
from hanet_jax.json_files import write_json
from hanet_jax.eval.metrics import METRIC_NAMES, read_per_image_csv
from hanet_jax.eval.protocols import PROTOCOLS


GROUP_BY = ("auto", "column", "busi_release", "udiat_release", "image")


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


def group_of_stems(stems: Sequence[str], rows_a, rows_b, group_by: str = "auto") -> tuple[list[str], str]:
    """(group per stem, how the groups were found). `auto`: the CSVs' `group` column where both
    files have one for every stem (and agree), else one group per image."""
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown --group_by {group_by!r}; choose one of {GROUP_BY}")
    if group_by in ("busi_release", "udiat_release"):
        release = group_by.split("_")[0]
        return [release_original(s, release) for s in stems], f"the {release.upper()} release's copy numbering"
    if group_by == "image":
        return list(stems), "none: each image on its own (copies of one original counted separately)"
    column = {}
    for label, rows in (("A", rows_a), ("B", rows_b)):
        for r in rows:
            g = r.get("group")
            if g is not None and column.setdefault(r["stem"], g) != g:
                raise ValueError(f"{label}: stem {r['stem']!r} has group {g!r}, the other file {column[r['stem']]!r}")
    if all(s in column for s in stems):
        return [column[s] for s in stems], "the per-image CSVs' group column (the run's near-duplicate groups)"
    if group_by == "column":
        missing = [s for s in stems if s not in column][:5]
        raise ValueError(f"--group_by column: no group for stems {missing} (eval.py writes it when the run knows its groups)")
    return list(stems), "none: the CSVs hold no groups, so each image on its own (copies counted separately)"


def group_means(groups: Sequence, *values) -> list[np.ndarray]:
    """Each array's mean per group, the groups in order of first appearance."""
    order = list(dict.fromkeys(groups))
    index = {g: i for i, g in enumerate(order)}
    ids = np.array([index[g] for g in groups])
    counts = np.bincount(ids, minlength=len(order))
    return [np.bincount(ids, weights=np.asarray(v, np.float64), minlength=len(order)) / counts for v in values]


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


def compare_scores(a, b, n_resamples: int = 2000, seed: int = 0, groups: Sequence | None = None) -> dict:
    """Paired statistics of scores b vs a (same images, same order, no NaN). With `groups`, the
    signed-rank test runs on per-group means (one value per original) and the CIs resample
    groups; the per-image test is kept beside it for contrast."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty 1-D score arrays of equal length, got {a.shape}, {b.shape}")
    groups = list(range(a.size)) if groups is None else list(groups)
    if len(groups) != a.size:
        raise ValueError(f"{len(groups)} groups for {a.size} pairs")
    ga, gb = group_means(groups, a, b)
    resample = None if ga.size == a.size else groups  # each image its own group: the plain bootstrap
    # Two-sided, zero differences dropped, exact or normal p-value chosen by scipy ("auto").
    test = scipy.stats.wilcoxon(gb, ga) if np.any(gb != ga) else None
    per_image = scipy.stats.wilcoxon(b, a) if np.any(b != a) else None
    return {
        "n_pairs": int(a.size), "n_groups": int(ga.size),
        "mean_a": float(a.mean()), "ci_a": list(bootstrap_ci(a, n_resamples, seed, groups=resample)),
        "mean_b": float(b.mean()), "ci_b": list(bootstrap_ci(b, n_resamples, seed, groups=resample)),
        "median_diff": float(np.median(gb - ga)),
        "wilcoxon_statistic": math.nan if test is None else float(test.statistic),
        "p_value": 1.0 if test is None else float(test.pvalue),
        "rank_biserial": rank_biserial(gb - ga),
        "per_image": {"n": int(a.size), "median_diff": float(np.median(b - a)),
                      "wilcoxon_statistic": math.nan if per_image is None else float(per_image.statistic),
                      "p_value": 1.0 if per_image is None else float(per_image.pvalue)},
    }


def _report(r: dict) -> str:
    lines = [
        f"{r['metric']} (protocol {r['protocol']}): {r['n_pairs']} paired images in {r['n_groups']} groups, "
        f"{r['n_dropped_nan']} dropped (NaN in A or B); groups: {r['groups']}",
        f"A {r['file_a']}: mean {r['mean_a']:.4f}  95% CI [{r['ci_a'][0]:.4f}, {r['ci_a'][1]:.4f}]",
        f"B {r['file_b']}: mean {r['mean_b']:.4f}  95% CI [{r['ci_b'][0]:.4f}, {r['ci_b'][1]:.4f}]",
        f"median difference of group means (B - A): {r['median_diff']:+.4f}",
        f"Wilcoxon signed-rank over {r['n_groups']} groups (per-group means): "
        f"statistic {r['wilcoxon_statistic']:g}, p = {r['p_value']:.4g}",
        f"rank-biserial r over groups (positive: B better): {r['rank_biserial']:+.3f}",
    ]
    if r["n_groups"] < r["n_pairs"]:
        pi = r["per_image"]
        lines.append(f"for contrast only, per image (n = {pi['n']}, copies counted as independent): p = {pi['p_value']:.4g}")
    return "\n".join(lines)


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("metric", "dice", METRIC_NAMES, "the per-image score compared", flag_values=fv)
    flags.DEFINE_enum("protocol", "fixed", PROTOCOLS + tuple(f"{p}+tta" for p in PROTOCOLS),
                      "eval.py writes '+tta' rows for test-time-augmented predictions", flag_values=fv)
    flags.DEFINE_enum("group_by", "auto", GROUP_BY, "what one sample is: auto (the CSVs' group column, else "
                      "each image), column, busi_release / udiat_release (the release's copy numbering), "
                      "image", flag_values=fv)
    flags.DEFINE_integer("n_resamples", 2000, "bootstrap resamples", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "bootstrap seed", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result as JSON here", flag_values=fv)


COMMAND = command_line.Command("python -m hanet_jax.eval.compare", __doc__, _define_flags,
                               positional=("A_CSV", "B_CSV"))


def main(argv: Sequence[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    try:
        rows_a, rows_b = read_per_image_csv(args.a_csv), read_per_image_csv(args.b_csv)
        stems, a, b, n_dropped = paired_scores(rows_a, rows_b, args.metric, args.protocol)
        if not stems:
            raise ValueError(f"no pair left with a defined {args.metric} ({n_dropped} dropped as NaN)")
        groups, how = group_of_stems(stems, rows_a, rows_b, args.group_by)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"file_a": args.a_csv, "file_b": args.b_csv, "metric": args.metric,
              "protocol": args.protocol, "n_dropped_nan": n_dropped, "groups": how,
              **compare_scores(a, b, args.n_resamples, args.seed, groups=groups)}
    print(_report(result))
    if args.json:
        write_json(args.json, result)  # undefined values (r when every difference is 0): null
    return 0


def run() -> None:
    """The `hanet-compare` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
