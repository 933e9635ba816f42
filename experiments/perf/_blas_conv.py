"""A 3x3, stride-1, SAME convolution whose weight gradient (and optionally forward) runs as
OpenBLAS GEMMs on the host through `jax.pure_callback`: an issue-7 experiment
(docs/performance.md, round 7), not used by the model.

The trick needs no im2col copy: pad the NHWC input by one pixel and flatten it to rows of
(B*(H+2)*(W+2), C). Output pixel (h, w) sits at row r = h*(W+2) + w of that grid, and its tap
(i, j) reads row r + i*(W+2) + j, so each of the nine taps is one *contiguous* row-offset view:
    forward:  Y_grid  = sum_ij X_rows[off_ij : off_ij + N] @ K[i, j]
    weights:  dK[i,j] = X_rows[off_ij : off_ij + N]^T @ dY_grid
with dY_grid the output gradient on the same padded grid (zeros in the pad rows/columns, so
they add nothing). numpy hands these views to its BLAS without copying; the extra rows cost
(H+2)(W+2)/(HW) - 1 of the FLOPs (6% at 64x64, 27% at 16x16).

The input gradient stays XLA's (a forward conv with the flipped kernel). Under a sharded jit a
callback runs on device 0 with the whole batch gathered (jax's default for callbacks); the
`ffi_dw` mode runs the same GEMMs in C++ on each device's shard (`_blas_ffi.py`).
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from _conv3x3 import DN  # the running script's folder (experiments/perf) is on sys.path
_xla_conv = jax.lax.conv_general_dilated  # bound now: the A/B scripts patch the jax.lax name


def supported(x_shape, kernel_shape, strides, padding, dimension_numbers, dtype) -> bool:
    return (tuple(kernel_shape[:2]) == (3, 3) and tuple(strides) == (1, 1) and padding == "SAME"
            and tuple(dimension_numbers or ()) == DN and dtype == np.float32)


def _rows(x: np.ndarray, extra: int) -> np.ndarray:
    """`x` padded by one pixel, flattened to (B*(H+2)*(W+2) + extra, C), the tail zero."""
    b, h, w, c = x.shape
    n = b * (h + 2) * (w + 2)
    out = np.zeros((n + extra, c), x.dtype)
    out[:n].reshape(b, h + 2, w + 2, c)[:, 1:-1, 1:-1] = x
    return out


def _offsets(w: int) -> list[tuple[int, int, int]]:
    return [(i, j, i * (w + 2) + j) for i in range(3) for j in range(3)]


def forward_np(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    b, h, w, _ = x.shape
    f = k.shape[-1]
    n = b * (h + 2) * (w + 2)
    xr = _rows(np.asarray(x), 2 * (w + 2) + 2)
    y = np.zeros((n, f), np.float32)
    tmp = np.empty_like(y)
    for i, j, off in _offsets(w):
        np.matmul(xr[off:off + n], k[i, j], out=tmp)
        y += tmp
    return y.reshape(b, h + 2, w + 2, f)[:, :h, :w]


def weight_grad_np(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    b, h, w, c = x.shape
    f = dy.shape[-1]
    n = b * (h + 2) * (w + 2)
    xr = _rows(np.asarray(x), 2 * (w + 2) + 2)
    dyg = np.zeros((b, h + 2, w + 2, f), np.float32)
    dyg[:, :h, :w] = dy
    dyg = dyg.reshape(n, f)
    dk = np.empty((3, 3, c, f), np.float32)
    for i, j, off in _offsets(w):
        np.matmul(xr[off:off + n].T, dyg, out=dk[i, j])
    return dk


def _xla(x, k):
    return _xla_conv(x, k, (1, 1), "SAME", dimension_numbers=DN)


def _callback(fn, shape, *args):
    return jax.pure_callback(fn, jax.ShapeDtypeStruct(shape, np.float32), *args,
                             vmap_method="sequential")


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x, k, mode: str = "blas_dw"):
    """mode: blas_dw (the weight gradient in a host callback), blas_all (the forward too),
    ffi_dw (the weight gradient in the FFI custom calls of `_blas_ffi.py`) or ffi_all (the
    forward and the input gradient too)."""
    if mode == "blas_all":
        return _callback(forward_np, x.shape[:3] + k.shape[-1:], x, k)
    if mode == "ffi_all":
        import _blas_ffi
        return _blas_ffi.forward(x, k)
    return _xla(x, k)


def _fwd(x, k, mode):
    return conv3x3(x, k, mode), (x, k)


def _bwd(mode, res, dy):
    x, k = res
    if mode == "ffi_all":
        import _blas_ffi
        # The input gradient is the SAME conv of dy with the kernel flipped and in/out swapped.
        dx = _blas_ffi.forward(dy, k[::-1, ::-1].transpose(0, 1, 3, 2))
        return dx, _blas_ffi.weight_grad(x, dy)
    dx = jax.vjp(lambda x_: _xla(x_, k), x)[1](dy)[0]
    if mode == "ffi_dw":
        import _blas_ffi  # builds and registers the custom call on first use
        return dx, _blas_ffi.weight_grad(x, dy)
    return dx, _callback(weight_grad_np, k.shape, x, dy)


conv3x3.defvjp(_fwd, _bwd)
