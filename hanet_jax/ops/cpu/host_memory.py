"""Keep freed host memory mapped, so XLA:CPU's per-call buffers stop page-faulting.

XLA:CPU allocates each executable's temporary buffer with malloc on every call: 2.7 GB for the
full model's train step at batch 8, 256x256. glibc serves blocks that large with mmap and gives
them back with munmap on free, so every step faults the whole buffer in again (~700k minor
faults, 1.3-1.9 s of kernel time per step on the 2-core CPU box; scripts/perf/page_faults.py).
TensorFlow does not pay this the same way: its allocators keep and reuse their memory.

`keep_freed_host_memory()` tells glibc (mallopt) to serve every block from its heap instead of
mmap, never to trim the heap, and to use one arena: threads created before the call (XLA's, or
tf.data's) would otherwise keep arenas whose large blocks still go to mmap. The cost is that the
process keeps its peak footprint until it exits, as TensorFlow's and JAX's GPU allocators do.
Only the CPU backend gains, so the entry points (train, eval, predict, bench) call it only where
JAX can only run on the CPU, and before JAX starts: the thread that runs XLA's executables gets
its own arena when the backend starts, and a call after that changes nothing for it (measured
with scripts/perf/page_faults.py). HANET_HOST_MALLOC=system leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil

ENV = "HANET_HOST_MALLOC"
# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

_applied: bool | None = None


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018  (absent outside glibc, e.g. musl or macOS)
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_host_memory() -> bool:
    """Apply the settings once per process; True when glibc accepted them.

    False (and nothing changed) outside glibc, or when HANET_HOST_MALLOC=system.
    """
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get(ENV, "keep").strip().lower() == "system":
        _applied = False
        return _applied
    libc = _libc()
    if libc is None:
        _applied = False
        return _applied
    # mallopt returns 1 on success. A trim threshold of -1 becomes SIZE_MAX: never trim.
    _applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    return _applied


def cpu_only() -> bool:
    """Whether JAX can only pick its CPU backend, decided without starting any backend:
    JAX_PLATFORMS names cpu first, or no accelerator plugin (CUDA, ROCm, TPU) is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    if importlib.util.find_spec("libtpu") is not None:
        return False
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    try:
        import jax_plugins  # namespace package of the CUDA/ROCm plugins
    except ImportError:
        return True
    return not any(pkgutil.iter_modules(jax_plugins.__path__))


def keep_freed_host_memory_if_cpu_only() -> bool:
    """`keep_freed_host_memory()` when `cpu_only()`. Call it first thing in a process, before
    JAX starts its backend: threads that already hold their own malloc arena are not covered."""
    return cpu_only() and keep_freed_host_memory()
