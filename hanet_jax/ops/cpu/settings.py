"""The CPU handlers' switches and tuning knobs, as one frozen object read at trace time.

`current()` is the environment's settings (HANET_BLAS_CONV=0 turns every handler off,
HANET_WINOGRAD=0 the Winograd convs) with any `using(...)` overrides on top, innermost last:

    with settings.using(winograd_m=2, band_bytes=4096):   # a perf study or a test
        jax.jit(f).lower(...)

Functions already traced keep their cached trace, so enter the context before tracing.
Nothing here can change what a GPU or TPU compiles: the handlers apply only to CPU lowerings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

HANDLERS_ENV = "HANET_BLAS_CONV"   # 0: XLA's convs, gradients and pools everywhere
WINOGRAD_ENV = "HANET_WINOGRAD"    # 0: XLA's direct conv for the 3x3 forward and input gradient


@dataclasses.dataclass(frozen=True)
class CpuKernelSettings:
    handlers: bool = True
    # The weight-gradient handler's own register-tiled loop instead of OpenBLAS's GEMMs: 0 nowhere,
    # 1 at 32 outputs only (round 11), 2 at every output width it tiles (round 12).
    weight_grad_loop: int = 2
    # 1x1 convs' weight gradients in the handler's loop too (round 13).
    conv1x1_weight_grad: bool = True
    # Winograd tile size: None picks per shape, 0 turns Winograd off, 2 or 4 forces that m
    # wherever it fits (round 15).
    winograd_m: int | None = None
    # V and M of a band of tiles in ~L2; transformed weights up to ~L3 are read from it once per
    # band, larger ones once per call (round 15's per-shape timings).
    band_bytes: int = 1 << 20
    l3_bytes: int = 12 << 20


_overrides: list[dict] = []


def _env_off(name: str) -> bool:
    return os.environ.get(name, "1").strip() == "0"


def current() -> CpuKernelSettings:
    """The settings a trace now uses: the environment's, then each open `using` in order."""
    base = CpuKernelSettings(handlers=not _env_off(HANDLERS_ENV),
                             winograd_m=0 if _env_off(WINOGRAD_ENV) else None)
    for changes in _overrides:
        base = dataclasses.replace(base, **changes)
    return base


@contextlib.contextmanager
def using(**changes) -> Iterator[CpuKernelSettings]:
    """Traces inside the block use `current()` with `changes` (fields of CpuKernelSettings)."""
    dataclasses.replace(CpuKernelSettings(), **changes)  # a misspelt field fails here, not later
    _overrides.append(changes)
    try:
        yield current()
    finally:
        _overrides.remove(changes)


def disabled():
    """Trace with XLA's ops everywhere: e.g. for FLOP counts, since XLA's cost analysis does not
    see inside the custom calls."""
    return using(handlers=False)
