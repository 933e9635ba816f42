"""On the CPU, the 3x3 (stride 1, SAME) convs' forward and input gradient as Winograd
F(m x m, 3 x 3) in a C++ XLA FFI handler of ours (issue 7; docs/performance.md, round 15).

The direct conv does 9 multiplications per output and input channel; F(4x4, 3x3) does 36 per
16 outputs (2.25), F(2x2, 3x3) 16 per 4 (4). XLA:CPU's direct convs already run near this
machine's matmul peak, so fewer multiplications is the one way left to make them faster. The
handler (`winograd_conv.cc`) transforms each input tile in registers, runs one GEMM per
transform point over a band of tiles that stays in cache, and transforms the products back,
so the transformed data never makes a round trip through memory (the jnp Winograd of round 6
did, and lost). The handler transforms the HWIO kernel itself, into a buffer it keeps; the input
gradient is the same conv of the output gradient with the kernel flipped and its channels
swapped, which the handler builds in the same pass (`flip`).

Rounding: F(2x2, 3x3) agrees with XLA's conv to ~1e-6 relative, F(4x4, 3x3) to ~1e-5 (its
transforms multiply by up to 8 and divide by 24); both well inside the Keras parity tolerances
(tests/test_parity_keras.py). Parameters are untouched: the handler reads the HWIO kernel.

In inference a second handler also applies a BatchNorm + ReLU to each input value as it reads it
(`conv_of_affine_relu`, round 16), so the dense layers' activated maps are never written.

`tile_size` picks m per shape (round 15, `scripts/perf/winograd_shapes.py`): 4 where the map is
at least 32x32, 2 on smaller even maps down to 8x8, XLA's direct conv elsewhere (SFEB's 1x1
pooled maps, odd sizes, widths that are not a multiple of the vector). Only for the CPU backend
at float32, where `blas_conv.active()`; HANET_WINOGRAD=0 keeps XLA's conv.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

import jax
import numpy as np

from hanet_jax.ops.cpu import conv as blas_conv

ENV = "HANET_WINOGRAD"            # 0: XLA's direct conv for the forward and input gradient
_SOURCE = Path(__file__).with_name("winograd_conv.cc")
_CONV = "hanet_winograd_conv3x3"
_CONV_AFFINE_RELU = "hanet_winograd_conv3x3_affine_relu"
# V and M of a band of tiles in ~L2; transformed weights up to ~L3 are read from it once per band,
# larger ones once per call (round 15's per-shape timings).
BAND_BYTES = 1 << 20
L3_BYTES = 12 << 20
# Read at trace time, so the perf scripts can compare: None picks per shape, 0 turns it off,
# 2 or 4 forces that m wherever it fits.
FORCE_M = None


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The handler, built and registered once per process (None, logged, where it cannot be)."""
    try:
        lib = blas_conv.load_handlers(_SOURCE, {_CONV: "WinogradConv", _CONV_AFFINE_RELU: "WinogradConvAffineRelu"})
        lib.VectorWidth.restype = ctypes.c_int64
        return lib
    except Exception as e:  # noqa: BLE001  (any failure: XLA's conv is always correct)
        logging.warning("%s: the CPU 3x3 convs stay XLA's (%s); set %s=0 to skip the attempt",
                        __name__, e, ENV)
        return None


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0" and FORCE_M != 0


def tile_size(h: int, w: int, c: int, f: int) -> int | None:
    """m for a 3x3 SAME conv of an (h, w, c) map to f channels, or None for XLA's conv. Call only
    where `blas_conv.applies` holds (CPU, float32, the handlers enabled)."""
    if not enabled() or _library() is None:
        return None
    width = _library().VectorWidth()
    if c % width or f % width:
        return None
    fits = [m for m in (4, 2) if h % m == 0 and w % m == 0]
    if FORCE_M is not None:
        return FORCE_M if FORCE_M in fits else None
    if 4 in fits and min(h, w) >= 32:
        return 4
    if 2 in fits and min(h, w) >= 8:
        return 2
    return None


@functools.cache
def _conv(m: int, flip: bool):
    return blas_conv._sharded_over_batch(
        _CONV, lambda x, k: x.shape[:3] + (k.shape[2 if flip else 3],), "b h w c, k l i o -> b h w o",
        summed=False, second_sharded=False,
        attrs=lambda: {"m": np.int64(m), "flip": flip, "band_bytes": np.int64(BAND_BYTES),
                       "l3_bytes": np.int64(L3_BYTES)})[0]


def conv(x: jax.Array, kernel: jax.Array, m: int, flip: bool = False) -> jax.Array:
    """The 3x3 SAME conv of NHWC `x` with the HWIO `kernel`; with `flip`, with the kernel flipped
    and its channels swapped (the input gradient's conv: `x` is then the output gradient).
    Batch-sharded under jit, the kernel replicated."""
    return _conv(m, flip)(x, kernel)


@functools.cache
def _conv_affine_relu(m: int):
    return blas_conv._sharded_over_batch(
        _CONV_AFFINE_RELU, lambda x, s, t, k: x.shape[:3] + (k.shape[3],), "b h w c, c, c, k l i o -> b h w o",
        summed=False, second_sharded=False,
        attrs=lambda: {"m": np.int64(m), "band_bytes": np.int64(BAND_BYTES), "l3_bytes": np.int64(L3_BYTES)})[0]


def fuses_affine_relu(x: jax.Array, features: int) -> bool:
    """Whether `conv_of_affine_relu` can run the 3x3 SAME conv of (activated) `x` to `features`."""
    k = jax.ShapeDtypeStruct((3, 3, x.shape[-1], features), x.dtype)
    return blas_conv.applies(x, k, 1, "SAME") and tile_size(*x.shape[1:], features) is not None


def conv_of_affine_relu(x: jax.Array, scale: jax.Array, shift: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 3x3 SAME conv of `relu(x * scale + shift)`, with per-channel scale and shift: an
    inference BatchNorm and its ReLU that the handler applies as it reads x, so the activated map
    is never written (round 16). Forward only; call where `fuses_affine_relu` holds."""
    return _conv_affine_relu(tile_size(*x.shape[1:], kernel.shape[-1]))(x, scale, shift, kernel)
