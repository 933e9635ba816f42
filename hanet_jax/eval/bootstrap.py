"""Percentile-bootstrap confidence interval for a mean over images, optionally resampling
whole near-duplicate groups (a cluster bootstrap)."""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import numpy as np


def bootstrap_ci(values, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                 groups: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """(lo, hi): the alpha/2 and 1 - alpha/2 quantiles of the means of `n_resamples` resamples.

    Without `groups`, each resample draws len(values) images with replacement. With `groups`
    (one id per value), it draws as many groups as there are, with replacement, and takes the
    mean over all their images: copies of one image (the processed releases hold 5 or 19 of
    each original) are not independent, and resampling them one by one would make the interval
    too narrow. NaNs (images where the metric is undefined) are dropped first. Same seed, same
    interval. Returns (NaN, NaN) when no finite value is left. All resamples are drawn at once:
    an (n_resamples, n) index array, i.e. 16 MB for 1,000 images at the default 2,000.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if groups is not None and len(groups) != values.size:
        raise ValueError(f"{values.size} values but {len(groups)} group ids")
    finite = ~np.isnan(values)
    values = values[finite]
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if groups is None:
        means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    else:
        _, index = np.unique(np.asarray(groups, dtype=object)[finite].astype(str),
                             return_inverse=True)
        sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(np.float64)
        draw = rng.integers(0, sums.size, size=(n_resamples, sums.size))
        means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def n_groups(groups: Sequence[Hashable]) -> int:
    return len({str(g) for g in groups})
