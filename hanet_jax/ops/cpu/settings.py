"""The CPU handlers' switches and tuning knobs, as one frozen object that is part of the jit key.

The settings live in a `jax.make_user_context`: jax folds its value into every jit's cache key,
so a function traced with one setting is traced again, never reused, under another:

    with settings.using(winograd_m=2, band_bytes=4096):   # a perf study or a test
        jax.jit(f).lower(...)
    with settings.disabled():                              # an export, a FLOP count
        jax.jit(f).lower(...)                              # a fresh, handler-free trace

The environment is read once, when this module is first imported (start-up): HANET_BLAS_CONV=0
turns every handler off, HANET_WINOGRAD=0 the Winograd convs. Later changes to os.environ do
nothing; use `using`. Nothing here can change what a GPU or TPU compiles: the handlers apply only
to CPU lowerings (hanet_jax/ops, tests/test_lowering.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

import jax

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


def _env_off(name: str) -> bool:
    return os.environ.get(name, "1").strip() == "0"


def from_environment() -> CpuKernelSettings:
    """The defaults with the environment's overrides (HANET_BLAS_CONV, HANET_WINOGRAD)."""
    return CpuKernelSettings(handlers=not _env_off(HANDLERS_ENV), winograd_m=0 if _env_off(WINOGRAD_ENV) else None)


# Read once, at start-up. A frozen dataclass hashes by value, as a jit key must.
_CONTEXT = jax.make_user_context(default_value=from_environment())


def current() -> CpuKernelSettings:
    """The settings a trace now uses: start-up's, or the innermost open `using`'s."""
    return _CONTEXT.value


@contextlib.contextmanager
def using(**changes) -> Iterator[CpuKernelSettings]:
    """Traces and jit calls inside the block use `current()` with `changes` (fields of
    CpuKernelSettings); a misspelt field fails here."""
    changed = dataclasses.replace(current(), **changes)
    with _CONTEXT(changed):
        yield changed


def disabled():
    """Trace with XLA's ops everywhere: for exports (a multi-platform artifact cannot serialize
    the handlers' custom partitioning) and FLOP counts (XLA's cost analysis does not see inside
    the custom calls)."""
    return using(handlers=False)
