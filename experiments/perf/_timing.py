"""The timing loop every microbenchmark here shares: warm up, interleave, print medians."""

import time

import numpy as np


def report_interleaved(fns: dict, repeats: int = 5, width: int = 28) -> dict:
    """Runs each zero-argument callable once to warm up, then `repeats` interleaved rounds
    (so machine noise hits every variant alike); prints and returns the median ms of each."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    medians = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    for k, ms in medians.items():
        print(f"{k:{width}s} {ms:9.1f} ms")
    return medians
