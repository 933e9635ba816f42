"""Builds a handler's C++ source with the system's compiler, loads it and registers its XLA FFI
targets for the CPU platform.

The library is compiled once per source, jax version, compiler, target and CPU, and cached
under HANET_CACHE_DIR (default ~/.cache/hanet_jax). Handlers that call a GEMM get scipy's
bundled OpenBLAS (scipy is already a dependency of jax), with one BLAS thread per XLA device.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

CACHE_ENV = "HANET_CACHE_DIR"     # where the built handler is kept (~/.cache/hanet_jax)
MARCH_ENV = "HANET_CXX_MARCH"     # the handler's -march (native: this CPU; e.g. x86-64-v3 to share a build)


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hanet_jax")


def _cpu_flags() -> str:
    """The CPU's model and feature flags, as /proc/cpuinfo gives them ('' where it cannot)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))
    except OSError:
        return ""


def build(source: Path) -> Path:
    """The shared library of `source`, compiled once per source, jax version, compiler, target
    and CPU."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    march = os.environ.get(MARCH_ENV, "native")
    # -march=native: the build is for this CPU, so its features are part of the cache key.
    key = hashlib.sha256(source.read_bytes() + jax.__version__.encode() + cxx.encode()
                         + march.encode() + _cpu_flags().encode()).hexdigest()[:16]
    lib = _cache_dir() / "ffi" / key / f"lib{source.stem}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)  # concurrent builders: atomic rename
        os.close(fd)
        cmd = [cxx, "-O3", f"-march={march}", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
               str(source), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            os.unlink(tmp)
            raise RuntimeError(f"building {source} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)
    return lib


def openblas() -> ctypes.CDLL:
    """scipy's bundled OpenBLAS (32-bit integers), already a dependency of jax."""
    import scipy

    found = sorted(glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs",
                                          "libscipy_openblas*.so")))
    found = [p for p in found if "64_" not in os.path.basename(p)]
    if not found:
        raise RuntimeError("scipy's OpenBLAS (scipy.libs/libscipy_openblas*.so) was not found")
    return ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)


def load_handlers(source: Path, targets: dict[str, str]) -> ctypes.CDLL:
    """Builds `source`, hands it scipy's sgemm and registers its handlers {target: symbol}."""
    blas = openblas()
    # One BLAS thread per XLA device: the CPU split (cpu_devices.py) runs one device per core.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas.scipy_openblas_set_num_threads(max(1, (cores or 1) // max(1, jax.local_device_count("cpu"))))
    lib = ctypes.CDLL(str(build(source)))
    if hasattr(lib, "SetSgemm"):  # the sources that call a GEMM
        lib.SetSgemm(ctypes.cast(blas.scipy_cblas_sgemm, ctypes.c_void_p))
    for target, symbol in targets.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    _LOADED.append((blas, lib))
    return lib


_LOADED = []  # the loaded libraries, kept referenced for the life of the process
