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

`tile_size` picks m per shape (round 15, `experiments/perf/winograd_shapes.py`): 4 where the map is
at least 32x32, 2 on smaller even maps down to 8x8, XLA's direct conv elsewhere (SFEB's 1x1
pooled maps, odd sizes, widths that are not a multiple of the vector). Only for the CPU backend
at float32, where `conv.active()`; HANET_WINOGRAD=0 (`settings`) keeps XLA's conv.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import jax
import numpy as np

from hanet_jax.ops.cpu import settings, targets
from hanet_jax.ops.cpu.build import load_handlers
from hanet_jax.ops.cpu.partitioning import sharded_over_batch

_SOURCE = Path(__file__).with_name("winograd_conv.cc")
_CONV = targets.WINOGRAD_CONV3X3
_CONV_AFFINE_RELU = targets.WINOGRAD_CONV3X3_AFFINE_RELU


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The handler, built and registered once per process (None, logged, where it cannot be)."""
    try:
        lib = load_handlers(_SOURCE, {_CONV: "WinogradConv", _CONV_AFFINE_RELU: "WinogradConvAffineRelu"})
        lib.VectorWidth.restype = ctypes.c_int64
        return lib
    except Exception as e:  # noqa: BLE001  (any failure: XLA's conv is always correct)
        logging.warning("%s: the CPU 3x3 convs stay XLA's (%s); set %s=0 to skip the attempt",
                        __name__, e, settings.WINOGRAD_ENV)
        return None


def tile_size(h: int, w: int, c: int, f: int) -> int | None:
    """m for a 3x3 SAME conv of an (h, w, c) map to f channels, or None for XLA's conv. Call only
    where `conv.applies` holds (CPU, float32, the handlers enabled)."""
    force = settings.current().winograd_m
    if force == 0 or _library() is None:
        return None
    width = _library().VectorWidth()
    if c % width or f % width:
        return None
    fits = [m for m in (4, 2) if h % m == 0 and w % m == 0]
    if force is not None:
        return force if force in fits else None
    if 4 in fits and min(h, w) >= 32:
        return 4
    if 2 in fits and min(h, w) >= 8:
        return 2
    return None


def _band_attrs() -> dict:
    s = settings.current()  # read at trace time
    return {"band_bytes": np.int64(s.band_bytes), "l3_bytes": np.int64(s.l3_bytes)}


@functools.cache
def _conv(m: int, flip: bool):
    return sharded_over_batch(
        _CONV, lambda x, k: x.shape[:3] + (k.shape[2 if flip else 3],), "b h w c, k l i o -> b h w o",
        summed=False, second_sharded=False,
        attrs=lambda: {"m": np.int64(m), "flip": flip, **_band_attrs()})[0]


def conv(x: jax.Array, kernel: jax.Array, m: int, flip: bool = False) -> jax.Array:
    """The 3x3 SAME conv of NHWC `x` with the HWIO `kernel`; with `flip`, with the kernel flipped
    and its channels swapped (the input gradient's conv: `x` is then the output gradient).
    Batch-sharded under jit, the kernel replicated."""
    return _conv(m, flip)(x, kernel)


@functools.cache
def _conv_affine_relu(m: int):
    return sharded_over_batch(
        _CONV_AFFINE_RELU, lambda x, s, t, k: x.shape[:3] + (k.shape[3],), "b h w c, c, c, k l i o -> b h w o",
        summed=False, second_sharded=False,
        attrs=lambda: {"m": np.int64(m), **_band_attrs()})[0]


def conv_of_affine_relu(x: jax.Array, scale: jax.Array, shift: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 3x3 SAME conv of `relu(x * scale + shift)`, with per-channel scale and shift: an
    inference BatchNorm and its ReLU that the handler applies as it reads x, so the activated map
    is never written (round 16). Forward only; call where `hanet_jax.ops.fuses_affine_relu` holds."""
    return _conv_affine_relu(tile_size(*x.shape[1:], kernel.shape[-1]))(x, scale, shift, kernel)
