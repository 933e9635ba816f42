"""On the CPU, the 3x3 conv's weight gradient as nine BLAS GEMMs (issue 7; docs/performance.md,
round 7): XLA:CPU's own ran 2-3x slower at the decoder's large-channel convs there (1.18x on the
train step). How much it gains depends on the CPU: on an AVX-512 host the two tie in the step
(round 10, where blocking the GEMMs for cache and a per-shape choice were tried and not kept).

No im2col copy is needed: pad the NHWC input by one pixel and flatten it to rows of
(B*(H+2)*(W+2), C). Output pixel (h, w) sits at row r = h*(W+2) + w of that grid and its tap
(i, j) reads row r + i*(W+2) + j, so each tap is one contiguous row-offset view and
    dK[i, j] = X_rows[off_ij : off_ij + N]^T @ dY_grid
with dY_grid the output gradient on the same grid (zero in the pad rows and columns). The
GEMMs run in a C++ XLA FFI handler (`blas_conv3x3.cc`, built with the system's C++ compiler for
this CPU on first use and cached) calling the OpenBLAS that scipy, a dependency of jax, ships
(or, at the output widths it tiles, its own register-blocked loop instead, since these GEMMs are
long and thin and OpenBLAS runs them well below its peak: rounds 11-12); under a batch-sharded jit each device computes its shard's partial gradient and a
psum adds them, as XLA does for its own conv gradient. The forward and the input gradient stay XLA's, so
inference, exports and ports are untouched, and the parameters are the same.

Only for the CPU backend at float32; elsewhere, with HANET_BLAS_CONV=0, or where the handler
cannot be built (no compiler, no scipy OpenBLAS: logged once), `Conv` keeps XLA's gradient.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

ENV = "HANET_BLAS_CONV"           # 0: XLA's weight gradient everywhere
CACHE_ENV = "HANET_CACHE_DIR"     # where the built handler is kept (~/.cache/hanet_jax)
MARCH_ENV = "HANET_CXX_MARCH"     # the handler's -march (native: this CPU; e.g. x86-64-v3 to share a build)
_SOURCE = Path(__file__).with_name("blas_conv3x3.cc")
_TARGET = "hanet_conv3x3_weight_grad"
DN = ("NHWC", "HWIO", "NHWC")
# Where the handler runs its own register-tiled loop instead of OpenBLAS's GEMMs: 0 nowhere,
# 1 at 32 outputs only (round 11), 2 at every output width it tiles (multiples of 32, and 16;
# round 12). Read at trace time, so the perf scripts can compare them.
LOOP = 2


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hanet_jax")


def _cpu_flags() -> str:
    """The CPU's model and feature flags, as /proc/cpuinfo gives them ('' where it cannot)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))
    except OSError:
        return ""


def build(source: Path = _SOURCE) -> Path:
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
    lib.SetSgemm(ctypes.cast(blas.scipy_cblas_sgemm, ctypes.c_void_p))
    for target, symbol in targets.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    _LOADED.append((blas, lib))
    return lib


_LOADED = []  # the loaded libraries, kept referenced for the life of the process


_off = []  # `disabled()` contexts open


def enabled() -> bool:
    """HANET_BLAS_CONV is not 0 (read at trace time, so one process can compare both)."""
    return not _off and os.environ.get(ENV, "1").strip() != "0"


@contextlib.contextmanager
def disabled():
    """Trace with XLA's gradient: e.g. for FLOP counts, since XLA's cost analysis does not see
    inside the custom call. Functions traced earlier keep their cached trace."""
    _off.append(True)
    try:
        yield
    finally:
        _off.pop()


@functools.cache
def available() -> bool:
    """Whether the handler is built and registered (once per process; False also logs why)."""
    try:
        load_handlers(_SOURCE, {_TARGET: "WeightGrad"})
        return True
    except Exception as e:  # noqa: BLE001  (any failure: XLA's gradient is always correct)
        logging.warning("%s: the CPU 3x3 conv weight gradient falls back to XLA's (%s); "
                        "set %s=0 to skip the attempt", __name__, e, ENV)
        return False


def active() -> bool:
    """Whether a trace now would use the handler: enabled, CPU backend, handler loaded."""
    return enabled() and jax.default_backend() == "cpu" and available()


def applies(x: jax.Array, kernel: jax.Array, strides: int, padding: str) -> bool:
    """Whether `conv3x3` should compute this conv: 3x3, stride 1, SAME, float32, `active()`."""
    return (kernel.shape[:2] == (3, 3) and strides == 1 and padding == "SAME"
            and x.dtype == np.float32 and kernel.dtype == np.float32 and active())


def _weight_grad_local(x, dy):
    out = jax.ShapeDtypeStruct((3, 3, x.shape[-1], dy.shape[-1]), np.float32)
    return jax.ffi.ffi_call(_TARGET, out)(x, dy, loop=np.int64(LOOP))


@custom_partitioning
def weight_grad(x: jax.Array, dy: jax.Array) -> jax.Array:
    """d(sum(dy * conv(x, k))) / dk for the 3x3 SAME conv, (3, 3, C_in, C_out)."""
    return _weight_grad_local(x, dy)


def _batch_axis(arg):
    spec = arg.sharding.spec
    return spec[0] if len(spec) else None


def _infer(mesh, arg_shapes, result_shape):
    return NamedSharding(mesh, PartitionSpec())


def _partition(mesh, arg_shapes, result_shape):
    axis = _batch_axis(arg_shapes[0])
    batch = NamedSharding(mesh, PartitionSpec(axis))

    def lower(x, dy):  # one device's shard; the partial gradients are summed
        dk = _weight_grad_local(x, dy)
        return dk if axis is None else jax.lax.psum(dk, axis)

    return mesh, lower, NamedSharding(mesh, PartitionSpec()), (batch, batch)


weight_grad.def_partition(infer_sharding_from_operands=_infer, partition=_partition,
                          sharding_rule="b h w c, b h w f -> k l c f")


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's 3x3 SAME conv; its weight gradient is `weight_grad` (`Conv` calls this where
    `applies`)."""
    return _xla_conv(x, kernel)


def _fwd(x, kernel):
    return _xla_conv(x, kernel), (x, kernel)


def _bwd(res, dy):
    x, kernel = res
    if not available():  # called directly where the handler cannot be built: XLA's gradients
        return jax.vjp(_xla_conv, x, kernel)[1](dy)
    dx = jax.vjp(lambda x_: _xla_conv(x_, kernel), x)[1](dy)[0]
    return dx, weight_grad(x, dy)


conv3x3.defvjp(_fwd, _bwd)
