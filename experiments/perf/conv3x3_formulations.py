"""Microbenchmark: 3x3 stride-1 SAME conv formulations on XLA:CPU, forward and fwd+bwd.

    PYTHONPATH=. .venv/bin/python experiments/perf/conv3x3_formulations.py [B H W C F ...]

Formulations (all interleaved in one process, median of repeats):
  lax     : lax.conv_general_dilated NHWC/HWIO (XLA's conv)
  outcol  : "output-side im2col": one matmul (BHW, C) @ (C, 9F) -> (B,H,W,9,F), then the 9 taps
            are shifted and summed. Contiguous (BHW, C) matmuls in forward, input grad and
            weight grad; only the small 9F-wide tensor is shifted.
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def conv_lax(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_outcol(x, k):
    b, h, w, c = x.shape
    kh, kw, _, f = k.shape
    y9 = jnp.einsum("bhwc,cn->bhwn", x, k.transpose(2, 0, 1, 3).reshape(c, kh * kw * f))
    y9 = y9.reshape(b, h, w, kh, kw, f)
    y9 = jnp.pad(y9, ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            t = y9[:, i:i + h, j:j + w, i, j, :]
            out = t if out is None else out + t
    return out


def conv_outcol_rows(x, k):
    """Sum the kw taps along W first (per kh), then along H: fewer big slices."""
    b, h, w, c = x.shape
    kh, kw, _, f = k.shape
    y9 = jnp.einsum("bhwc,cn->bhwn", x, k.transpose(2, 0, 1, 3).reshape(c, kh * kw * f))
    y9 = y9.reshape(b, h, w, kh, kw, f)
    yp = jnp.pad(y9, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    # row partial sums: r[b,h,w,kh,f] = sum_j y9[b,h,w+j-1,kh,j,f]
    r = yp[:, :, 0:w, :, 0] + yp[:, :, 1:1 + w, :, 1] + yp[:, :, 2:2 + w, :, 2]
    rp = jnp.pad(r, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    return rp[:, 0:h, :, 0] + rp[:, 1:1 + h, :, 1] + rp[:, 2:2 + h, :, 2]


FORMS = {"lax": conv_lax, "outcol": conv_outcol, "outcol_rows": conv_outcol_rows}


def bench(shape, repeats=7):
    b, h, w, c, f = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, f)) / np.sqrt(9 * c), jnp.float32)
    g = jnp.asarray(rng.normal(size=(b, h, w, f)), jnp.float32)
    fns = {}
    ref = conv_lax(x, k)
    for name, fn in FORMS.items():
        fwd = jax.jit(fn)
        bwd = jax.jit(lambda x, k, fn=fn: jax.vjp(fn, x, k)[1](g))
        err = float(jnp.abs(fwd(x, k) - ref).max())
        gr = jax.jit(lambda x, k: jax.vjp(conv_lax, x, k)[1](g))(x, k)
        go = bwd(x, k)
        gerr = max(float(jnp.abs(a - b_).max() / jnp.abs(a).max()) for a, b_ in zip(gr, go))
        print(f"  {name:12s} max|fwd err| {err:.1e}  max rel grad err {gerr:.1e}")
        fns[name + " fwd"] = lambda fwd=fwd: fwd(x, k).block_until_ready()
        fns[name + " fwd+bwd"] = lambda bwd=bwd: jax.block_until_ready(bwd(x, k))
    for fn in fns.values():
        fn()
    t = {n: [] for n in fns}
    for _ in range(repeats):
        for n, fn in fns.items():
            t0 = time.perf_counter(); fn(); t[n].append(time.perf_counter() - t0)
    for n in fns:
        print(f"  {n:22s} {1e3 * np.median(t[n]):8.1f} ms")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    shapes = [tuple(args[i:i + 5]) for i in range(0, len(args), 5)] or [
        (8, 64, 64, 128, 32), (8, 128, 128, 64, 64), (8, 256, 256, 96, 16)]
    for s in shapes:
        print("B H W C F =", s)
        bench(s)
