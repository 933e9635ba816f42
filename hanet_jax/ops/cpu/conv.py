"""On the CPU, the weight gradients of the 3x3 (stride 1, SAME) and 1x1 convs in a C++ XLA FFI
handler of ours (issue 7; docs/performance.md, rounds 7 and 11-13). They are GEMMs with the pixels
as the long contracted axis, which XLA:CPU and OpenBLAS run well below their matmul peak; the
handler's register-tiled loop (`conv_weight_grad.cc`) runs most of the model's shapes at 130-210
GFLOP/s per AVX-512 core, up to 2.6x XLA's own gradient; only the 8x8 bottleneck conv's is slower
(docs/performance.md, rounds 12-13, `experiments/perf/loop_dw.py`).

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

Only for the CPU backend at float32; elsewhere, with HANET_BLAS_CONV=0 (`settings`), or where the handler
cannot be built (no compiler, no scipy OpenBLAS: logged once), `Conv` keeps XLA's gradients.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.ops.cpu import settings, targets, winograd
from hanet_jax.ops.cpu.build import load_handlers
from hanet_jax.ops.cpu.partitioning import sharded_over_batch

_SOURCE = Path(__file__).with_name("conv_weight_grad.cc")
_TARGET = targets.CONV3X3_WEIGHT_GRAD
_TARGET_1X1 = targets.CONV1X1_WEIGHT_GRAD
DN = ("NHWC", "HWIO", "NHWC")


@functools.cache
def available() -> bool:
    """Whether the handler is built and registered (once per process; False also logs why)."""
    try:
        load_handlers(_SOURCE, {_TARGET: "WeightGrad", _TARGET_1X1: "WeightGrad1x1"})
        return True
    except Exception as e:  # noqa: BLE001  (any failure: XLA's gradient is always correct)
        logging.warning("%s: the CPU conv weight gradients fall back to XLA's (%s); "
                        "set %s=0 to skip the attempt", __name__, e, settings.HANDLERS_ENV)
        return False


def active() -> bool:
    """Whether a trace now may use the handlers: switched on (`settings`) and loaded. Whether
    they run is decided per lowering platform by `hanet_jax.ops` (only a CPU lowering gets them)."""
    return settings.current().handlers and available()


def applies(x: jax.Array, kernel: jax.Array, strides: int, padding: str) -> bool:
    """Whether `conv3x3` should compute this conv: 3x3, stride 1, SAME, float32, `active()`."""
    return (kernel.shape[:2] == (3, 3) and strides == 1 and padding == "SAME"
            and x.dtype == np.float32 and kernel.dtype == np.float32 and active())


def applies_1x1(x: jax.Array, kernel: jax.Array) -> bool:
    """Whether `conv1x1` should compute this (stride-1) 1x1 conv: float32, `conv1x1_weight_grad`,
    `active()`, and a width the loop tiles (a multiple of 16; the head's 1 output stays XLA's)."""
    return (settings.current().conv1x1_weight_grad and kernel.shape[-1] % 16 == 0 and x.dtype == np.float32
            and kernel.dtype == np.float32 and active())


def _loop_attrs():
    return {"loop": np.int64(settings.current().weight_grad_loop)}


# d(sum(dy * conv(x, k))) / dk for the 3x3 SAME conv, (3, 3, C_in, C_out); and for the 1x1 conv,
# (C_in, C_out).
weight_grad, _weight_grad_local = sharded_over_batch(
    _TARGET, lambda x, dy: (3, 3, x.shape[-1], dy.shape[-1]), "b h w c, b h w f -> k l c f", attrs=_loop_attrs)
weight_grad_1x1, _weight_grad_1x1_local = sharded_over_batch(
    _TARGET_1X1, lambda x, dy: (x.shape[-1], dy.shape[-1]), "b h w c, b h w f -> c f", attrs=_loop_attrs)


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


def _conv3x3(x, kernel):
    """The forward: Winograd where `winograd.tile_size` picks an m, else XLA's direct conv."""

    m = winograd.tile_size(*x.shape[1:], kernel.shape[-1])
    return _xla_conv(x, kernel) if m is None else winograd.conv(x, kernel, m)


def _conv3x3_input_grad(x, kernel, dy):
    """The input gradient: the SAME conv of dy with the kernel flipped and its channels swapped,
    as Winograd where it applies, else XLA's."""

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
