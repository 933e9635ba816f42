"""Percentile-bootstrap confidence interval for a mean over images."""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(values, n_resamples: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """(lo, hi): the alpha/2 and 1 - alpha/2 quantiles of the means of `n_resamples` resamples.

    Each resample draws len(values) images with replacement from `values` after NaNs (images
    where the metric is undefined) are dropped. Same seed, same interval. Returns (NaN, NaN)
    when no finite value is left. All resamples are drawn at once: an (n_resamples, n) index
    array, i.e. 16 MB for 1,000 images at the default 2,000 resamples.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
