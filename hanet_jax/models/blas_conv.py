"""On the CPU, the 3x3 conv's weight gradient as nine BLAS GEMMs (issue 7; docs/performance.md,
round 7): XLA:CPU's own runs 2-3x slower at the decoder's large-channel convs.

No im2col copy is needed: pad the NHWC input by one pixel and flatten it to rows of
(B*(H+2)*(W+2), C). Output pixel (h, w) sits at row r = h*(W+2) + w of that grid and its tap
(i, j) reads row r + i*(W+2) + j, so each tap is one contiguous row-offset view and
    dK[i, j] = X_rows[off_ij : off_ij + N]^T @ dY_grid
with dY_grid the output gradient on the same grid (zero in the pad rows and columns). The
GEMMs run in a C++ XLA FFI handler (`blas_conv3x3.cc`, built with the system's C++ compiler on
first use and cached) calling the OpenBLAS that scipy, a dependency of jax, ships; under a
batch-sharded jit each device computes its shard's partial gradient and a psum adds them, as
XLA does for its own conv gradient. The forward and the input gradient stay XLA's, so
inference, exports and ports are untouched, and the parameters are the same.

Which is faster depends on the CPU: on an AVX2 host the GEMMs won 1.5-2.8x at the large
shapes, on an AVX-512 one XLA's own gradient wins at most shapes (docs/performance.md, rounds 7
and 10). So by default (`HANET_BLAS_CONV=auto`) each weight-gradient shape is timed once per
host, both ways, the first time a trace meets it, and the custom call is used only where it
measured faster; the results are kept in `~/.cache/hanet_jax/conv3x3_dw_timings.json`
(`HANET_CACHE_DIR`) and reused by later processes. `HANET_BLAS_CONV=1` uses the custom call for
every eligible conv, `0` never. Multi-process runs skip the timing (every process must trace
the same program) and keep XLA's unless set to 1.

Only for the CPU backend at float32; elsewhere, with HANET_BLAS_CONV=0, or where the handler
cannot be built (no compiler, no scipy OpenBLAS: logged once), `Conv` keeps XLA's gradient.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import glob
import hashlib
import json
import logging
import os
import time
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENV = "HANET_BLAS_CONV"           # auto (default): per shape, the faster; 1: always; 0: never
CACHE_ENV = "HANET_CACHE_DIR"     # where the built handler is kept (~/.cache/hanet_jax)
_SOURCE = Path(__file__).with_name("blas_conv3x3.cc")
_TARGET = "hanet_conv3x3_weight_grad"
DN = ("NHWC", "HWIO", "NHWC")
# Smaller weight gradients keep XLA's untimed: the custom call's fixed costs dominate them.
MIN_TIMED_GFLOP = 0.1
# The custom call must time at least this much faster: XLA's gradient is the default path.
MARGIN = 0.95
# Rows of the input and output gradient taken per block of the nine GEMMs, in bytes: a block
# stays in cache across its nine GEMMs instead of each GEMM streaming both from memory
# (docs/performance.md, round 10). Read at trace time; <= 0 is one block.
BLOCK_BYTES = 512 * 1024


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hanet_jax")


def build(source: Path = _SOURCE) -> Path:
    """The shared library of `source`, compiled once per source, jax version and compiler."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
    key = hashlib.sha256(source.read_bytes() + jax.__version__.encode() + cxx.encode()).hexdigest()[:16]
    lib = _cache_dir() / "ffi" / key / f"lib{source.stem}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)  # concurrent builders: atomic rename
        os.close(fd)
        cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
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


def _mode() -> str:
    raw = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if raw not in ("0", "1", "auto"):
        raise ValueError(f"{ENV}={raw!r}: expected auto, 1 or 0")
    return raw


def enabled() -> bool:
    """HANET_BLAS_CONV is not 0 (read at trace time, so one process can compare both)."""
    return not _off and _mode() != "0"


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
    return jax.ffi.ffi_call(_TARGET, out)(x, dy, block_bytes=np.int64(BLOCK_BYTES))


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


def _xla_weight_grad(x, dy):
    kernel = jnp.zeros((3, 3, x.shape[-1], dy.shape[-1]), x.dtype)  # the gradient is linear in dy
    return jax.vjp(lambda k: _xla_conv(x, k), kernel)[1](dy)[0]


def _bwd(res, dy):
    x, kernel = res
    dx = jax.vjp(lambda x_: _xla_conv(x_, kernel), x)[1](dy)[0]
    if available() and uses_custom_call(x.shape, dy.shape[-1]):
        return dx, weight_grad(x, dy)
    return dx, _xla_weight_grad(x, dy)


# --------------------------------------------------------------------------- per-shape timing

def uses_custom_call(x_shape, features: int) -> bool:
    """Whether the weight gradient of this conv (NHWC input `x_shape`, `features` outputs) runs
    in the custom call: always with HANET_BLAS_CONV=1; with auto, where it timed faster."""
    mode = _mode()
    if mode == "1":
        return True
    gflop = 2 * 9 * int(np.prod(x_shape)) * features / 1e9
    if mode == "0" or gflop < MIN_TIMED_GFLOP or jax.process_count() > 1:
        return False
    return timing(tuple(int(d) for d in x_shape), int(features))["custom_call"]


def _host_key() -> str:
    """What the timings depend on: the CPU, how it is split, jax, and the handler's source."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and not model:
                    model = value.strip()
                elif name.strip() == "flags" and not flags:
                    flags = value.strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    digest = hashlib.sha256((flags + _SOURCE.read_text() + str(BLOCK_BYTES)).encode()).hexdigest()[:12]
    return (f"{model or 'cpu'} ({digest}), {cores} cores, {jax.local_device_count('cpu')} devices, "
            f"jax {jax.__version__}")


def _timings_file() -> Path:
    return _cache_dir() / "conv3x3_dw_timings.json"


def _read_timings() -> dict:
    try:
        return json.loads(_timings_file().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: time again
        return {}


_TIMINGS: dict = {}


def timing(x_shape: tuple, features: int) -> dict:
    """{"custom_call_ms", "xla_ms", "custom_call"} for this shape on this host: from this
    process, else from the cache file, else measured now (and added to the file)."""
    key = "x".join(map(str, x_shape)) + f"->{features}"
    host = _host_key()
    if (host, key) not in _TIMINGS:
        entry = _read_timings().get(host, {}).get(key)
        if entry is None:
            # In a fresh thread: the trace that asks is open in this one and must not capture
            # the timing runs.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                entry = pool.submit(_time_both, x_shape, features).result()
            _save_timing(host, key, entry)
            logging.info("%s: 3x3 weight gradient %s: custom call %.2f ms, XLA %.2f ms", __name__,
                         key, entry["custom_call_ms"], entry["xla_ms"])
        _TIMINGS[host, key] = entry
    return _TIMINGS[host, key]


def _save_timing(host: str, key: str, entry: dict) -> None:
    table = _read_timings()  # re-read: another process may have added shapes meanwhile
    table.setdefault(host, {})[key] = entry
    path = _timings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _time_both(x_shape: tuple, features: int, repeats: int = 3) -> dict:
    """Both weight gradients, batch-sharded over this process's CPU devices as train.py and
    bench.py run them (one device if the batch does not divide), timed in turns, medians."""
    devices = jax.local_devices(backend="cpu")
    n = len(devices) if x_shape[0] % len(devices) == 0 else 1
    mesh = Mesh(np.array(devices[:n]), ("batch",))
    data, repl = NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal(x_shape, np.float32), data)
    dy = jax.device_put(rng.standard_normal(x_shape[:3] + (features,), np.float32), data)
    fns = {name: jax.jit(fn, out_shardings=repl).lower(x, dy).compile()
           for name, fn in (("custom_call", weight_grad), ("xla", _xla_weight_grad))}
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn(x, dy).block_until_ready()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(x, dy).block_until_ready()
            times[name].append(1e3 * (time.perf_counter() - t0))
    ms = {f"{name}_ms": float(np.median(t)) for name, t in times.items()}
    return {**ms, "custom_call": ms["custom_call_ms"] < MARGIN * ms["xla_ms"]}


conv3x3.defvjp(_fwd, _bwd)
