"""Tried and NOT adopted: a 3x3 SAME conv whose weight gradient is 9 GEMMs over row-offset views
of the zero-padded input flattened to (B*(H+2)*(W+2), C) (no strided copies: each tap is a
contiguous row offset), and whose input gradient is a forward conv with the flipped kernel.
Slower than XLA's own gradient in isolation (fwd+bwd, batch 8, 2-core CPU, interleaved):
8x64x64 128->128 305 vs 319 ms; 128->32 62 vs 152 ms; 8x256x256 32->16 216 vs 635 ms;
8x32x32 384->128 199 vs 244 ms (lax first). Gradients agree to ~5e-6 relative.

    PYTHONPATH=. .venv/bin/python experiments/perf/conv3x3_flat_dw.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

DN = ("NHWC", "HWIO", "NHWC")

def _lax(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DN)

@jax.custom_vjp
def conv3x3(x, k):
    return _lax(x, k)

def _fwd(x, k):
    return _lax(x, k), (x, k)

def _bwd(res, dy):
    x, k = res
    b, h, w, c = x.shape
    f = k.shape[-1]
    # dx: SAME conv of dy with the spatially flipped, in/out-swapped kernel.
    dx = _lax(dy, jnp.flip(k, (0, 1)).swapaxes(2, 3))
    # dk[i, j] = sum_p xpad_flat[p + i*(w+2) + j]^T dy_ext_flat[p] over the padded grid.
    s = (h + 2) * (w + 2)
    xf = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(b * s, c)
    omax = 2 * (w + 2) + 2
    xf = jnp.pad(xf, ((0, omax), (0, 0)))
    dyf = jnp.pad(dy, ((0, 0), (0, 2), (0, 2), (0, 0))).reshape(b * s, f)
    taps = []
    for i in range(3):
        for j in range(3):
            o = i * (w + 2) + j
            taps.append(jax.lax.dot_general(jax.lax.slice_in_dim(xf, o, o + b * s), dyf, (((0,), (0,)), ((), ()))))
    dk = jnp.stack(taps).reshape(3, 3, c, f)
    return dx, dk

conv3x3.defvjp(_fwd, _bwd)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    fns = {}
    for shp in [(8, 64, 64, 128, 128), (8, 64, 64, 128, 32), (8, 256, 256, 32, 16), (8, 32, 32, 384, 128)]:
        B, H, W, C, F = shp
        x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32); k = jnp.asarray(rng.normal(size=(3, 3, C, F)) / np.sqrt(9 * C), jnp.float32)
        g = jnp.asarray(rng.normal(size=(B, H, W, F)), jnp.float32)
        ga = jax.jit(lambda x, k: jax.vjp(_lax, x, k)[1](g)); gb = jax.jit(lambda x, k: jax.vjp(conv3x3, x, k)[1](g))
        ra, rb = ga(x, k), gb(x, k)
        print(shp, "rel diffs", [float(jnp.abs(p - q).max() / jnp.abs(p).max()) for p, q in zip(ra, rb)])
        fns[f"{shp} lax"] = lambda ga=ga, x=x, k=k: jax.block_until_ready(ga(x, k))
        fns[f"{shp} flat"] = lambda gb=gb, x=x, k=k: jax.block_until_ready(gb(x, k))
    for f in fns.values(): f()
    t = {n: [] for n in fns}
    for _ in range(5):
        for n, f in fns.items():
            t0 = time.perf_counter(); f(); t[n].append(time.perf_counter() - t0)
    for n in fns: print(f"{n:32s} bwd {1e3*np.median(t[n]):7.1f} ms")
