"""On the CPU, the weight gradients of the 3x3 (stride 1, SAME) and 1x1 convs in a C++ XLA FFI
handler of ours (issue 7; docs/performance.md, rounds 7 and 11-13). They are GEMMs with the pixels
as the long contracted axis, which XLA:CPU and OpenBLAS run well below their matmul peak; the
handler's register-tiled loop (`conv_weight_grad.cc`) runs most of the model's shapes at 130-210
GFLOP/s per AVX-512 core, up to 2.6x XLA's own gradient; only the 8x8 bottleneck conv's is slower
(docs/performance.md, rounds 12-13, `scripts/perf/loop_dw.py`).

No im2col copy is needed for the 3x3: pad the NHWC input by one pixel and flatten it to rows of
(B*(H+2)*(W+2), C). Output pixel (h, w) sits at row r = h*(W+2) + w of that grid and its tap
(i, j) reads row r + i*(W+2) + j, so each tap is one contiguous row-offset view and
    dK[i, j] = X_rows[off_ij : off_ij + N]^T @ dY_grid
with dY_grid the output gradient on the same grid (zero in the pad rows and columns). The 1x1's
is the same with one tap and no padding. The handler is built with the system's C++ compiler for
this CPU on first use and cached; at widths its loop does not tile it calls the OpenBLAS that
scipy, a dependency of jax, ships. Under a batch-sharded jit each device computes its shard's
partial gradient and a psum adds them, as XLA does for its own conv gradient. The 3x3 convs'
forwards and input gradients run as Winograd where `winograd.tile_size` picks it (round 15),
else XLA's; the 1x1 convs' stay XLA's einsums. The parameters are the same.

Only for the CPU backend at float32; elsewhere, with HANET_BLAS_CONV=0, or where the handler
cannot be built (no compiler, no scipy OpenBLAS: logged once), `Conv` keeps XLA's gradients.
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
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

ENV = "HANET_BLAS_CONV"           # 0: XLA's weight gradient everywhere
CACHE_ENV = "HANET_CACHE_DIR"     # where the built handler is kept (~/.cache/hanet_jax)
MARCH_ENV = "HANET_CXX_MARCH"     # the handler's -march (native: this CPU; e.g. x86-64-v3 to share a build)
_SOURCE = Path(__file__).with_name("conv_weight_grad.cc")
_TARGET = "hanet_conv3x3_weight_grad"
_TARGET_1X1 = "hanet_conv1x1_weight_grad"
DN = ("NHWC", "HWIO", "NHWC")
# Where the handler runs its own register-tiled loop instead of OpenBLAS's GEMMs: 0 nowhere,
# 1 at 32 outputs only (round 11), 2 at every output width it tiles (multiples of 32, and 16;
# round 12). Read at trace time, so the perf scripts can compare them.
LOOP = 2
# Whether 1x1 convs' weight gradients run in the handler's loop too (round 13); read at trace time.
ONE_BY_ONE = True


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
    if hasattr(lib, "SetSgemm"):  # the sources that call a GEMM
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
        load_handlers(_SOURCE, {_TARGET: "WeightGrad", _TARGET_1X1: "WeightGrad1x1"})
        return True
    except Exception as e:  # noqa: BLE001  (any failure: XLA's gradient is always correct)
        logging.warning("%s: the CPU conv weight gradients fall back to XLA's (%s); "
                        "set %s=0 to skip the attempt", __name__, e, ENV)
        return False


def active() -> bool:
    """Whether a trace now would use the handler: enabled, CPU backend, handler loaded."""
    return enabled() and jax.default_backend() == "cpu" and available()


def applies(x: jax.Array, kernel: jax.Array, strides: int, padding: str) -> bool:
    """Whether `conv3x3` should compute this conv: 3x3, stride 1, SAME, float32, `active()`."""
    return (kernel.shape[:2] == (3, 3) and strides == 1 and padding == "SAME"
            and x.dtype == np.float32 and kernel.dtype == np.float32 and active())


def applies_1x1(x: jax.Array, kernel: jax.Array) -> bool:
    """Whether `conv1x1` should compute this (stride-1) 1x1 conv: float32, `ONE_BY_ONE`,
    `active()`, and a width the loop tiles (a multiple of 16; the head's 1 output stays XLA's)."""
    return (ONE_BY_ONE and kernel.shape[-1] % 16 == 0 and x.dtype == np.float32
            and kernel.dtype == np.float32 and active())


def _batch_axis(arg):
    spec = arg.sharding.spec
    return spec[0] if len(spec) else None


def _sharded_over_batch(target: str, out_shape, rule: str, summed: bool = True,
                        second_sharded: bool = True, attrs=dict):
    """The handler `target` as a jax function of its operands, batch first; the others are
    replicated instead where not `second_sharded` (e.g. a kernel). Its result has
    shape `out_shape(*operands)` and attributes `attrs()` (read at trace time). Under a
    batch-sharded jit each device runs it on its shard: `summed` results (weight gradients) are
    partial sums that a psum adds, as XLA does for its own conv gradient; the others stay
    sharded over the batch."""

    def local(*args):
        out = jax.ShapeDtypeStruct(out_shape(*args), np.float32)
        return jax.ffi.ffi_call(target, out)(*args, **attrs())

    def result(mesh, axis):
        return NamedSharding(mesh, PartitionSpec() if summed else PartitionSpec(axis))

    def infer(mesh, arg_shapes, result_shape):
        return result(mesh, _batch_axis(arg_shapes[0]))

    def partition(mesh, arg_shapes, result_shape):
        axis = _batch_axis(arg_shapes[0])
        batch = NamedSharding(mesh, PartitionSpec(axis))
        second = batch if second_sharded else NamedSharding(mesh, PartitionSpec())

        def lower(*args):  # one device's shard
            out = local(*args)
            return jax.lax.psum(out, axis) if summed and axis is not None else out

        return mesh, lower, result(mesh, axis), (batch,) + (second,) * (len(arg_shapes) - 1)

    fn = custom_partitioning(lambda *args: local(*args))
    fn.def_partition(infer_sharding_from_operands=infer, partition=partition, sharding_rule=rule)
    return fn, local


def _loop_attrs():
    return {"loop": np.int64(LOOP)}


# d(sum(dy * conv(x, k))) / dk for the 3x3 SAME conv, (3, 3, C_in, C_out); and for the 1x1 conv,
# (C_in, C_out).
weight_grad, _weight_grad_local = _sharded_over_batch(
    _TARGET, lambda x, dy: (3, 3, x.shape[-1], dy.shape[-1]), "b h w c, b h w f -> k l c f", attrs=_loop_attrs)
weight_grad_1x1, _weight_grad_1x1_local = _sharded_over_batch(
    _TARGET_1X1, lambda x, dy: (x.shape[-1], dy.shape[-1]), "b h w c, b h w f -> c f", attrs=_loop_attrs)


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


def _conv3x3(x, kernel):
    """The forward: Winograd where `winograd.tile_size` picks an m, else XLA's direct conv."""
    from hanet_jax.ops.cpu import winograd  # it builds on this module's loader and wrapper

    m = winograd.tile_size(*x.shape[1:], kernel.shape[-1])
    return _xla_conv(x, kernel) if m is None else winograd.conv(x, kernel, m)


def _conv3x3_input_grad(x, kernel, dy):
    """The input gradient: the SAME conv of dy with the kernel flipped and its channels swapped,
    as Winograd where it applies, else XLA's."""
    from hanet_jax.ops.cpu import winograd

    m = winograd.tile_size(*dy.shape[1:], kernel.shape[2])
    if m is None:
        return jax.vjp(lambda x_: _xla_conv(x_, kernel), x)[1](dy)[0]
    return winograd.conv(dy, kernel, m, flip=True)


def _einsum_1x1(x, kernel):
    return jnp.einsum("bhwc,cf->bhwf", x, kernel)


def _einsum_1x1_input_grad(x, kernel, dy):
    return jnp.einsum("bhwf,cf->bhwc", dy, kernel)


def _with_our_gradients(conv, input_grad, weight_grad_fn):
    """`conv(x, kernel)` whose input gradient is `input_grad(x, kernel, dy)` and weight gradient
    `weight_grad_fn(x, dy)`; where the handlers cannot be built, XLA's conv and gradients."""

    @jax.custom_vjp
    def fn(x, kernel):
        return conv(x, kernel)

    def fwd(x, kernel):
        return conv(x, kernel), (x, kernel)

    def bwd(res, dy):
        x, kernel = res
        if not available():  # called directly where the handler cannot be built: XLA's gradients
            return jax.vjp(conv, x, kernel)[1](dy)
        return input_grad(x, kernel, dy), weight_grad_fn(x, dy)

    fn.defvjp(fwd, bwd)
    return fn


# The 3x3 SAME conv (HWIO kernel; Winograd where it applies, winograd.py) and the 1x1 conv as an
# einsum ((C_in, C_out) kernel), with our weight gradients: `Conv` calls them where `applies` /
# `applies_1x1`.
conv3x3 = _with_our_gradients(_conv3x3, _conv3x3_input_grad, weight_grad)
conv1x1 = _with_our_gradients(_einsum_1x1, _einsum_1x1_input_grad, weight_grad_1x1)
