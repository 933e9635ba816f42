"""im2col vs lax conv for convs with few input channels (the stem: 7x7/2, 3->64; the head:
3x3, 32->16 at 256x256), fwd and grads, interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/im2col_small_cin.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import report_interleaved

rng = np.random.default_rng(0)
r = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)


def lax_conv(k, x, s, pad):
    return jax.lax.conv_general_dilated(x, k, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def im2col_conv(k, x, s, pad):
    kh, kw, c, f = k.shape
    if pad == "SAME":
        x = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    b, hp, wp, _ = x.shape
    ho, wo = (hp - kh) // s + 1, (wp - kw) // s + 1
    cols = [x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :] for i in range(kh) for j in range(kw)]
    cols = jnp.concatenate(cols, axis=-1)
    return jnp.einsum("bhwn,nf->bhwf", cols, k.reshape(kh * kw * c, f))


cases = {
    "stem": ((7, 7, 3, 64), (8, 262, 262, 3), 2, "VALID", (0,)),
    "head": ((3, 3, 32, 16), (8, 256, 256, 32), 1, "SAME", (0, 1)),
}
fns = {}
for name, (ks, xs, s, pad, argnums) in cases.items():
    k, x = r(*ks), r(*xs)
    ref = lax_conv(k, x, s, pad)
    for form, fn in (("lax", lax_conv), ("im2col", im2col_conv)):
        loss = lambda k, x, fn=fn: jnp.sum(fn(k, x, s, pad) ** 2)
        f = jax.jit(lambda k, x, fn=fn: fn(k, x, s, pad))
        g = jax.jit(jax.grad(loss, argnums=argnums))
        err = float(jnp.abs(f(k, x) - ref).max() / jnp.abs(ref).max())
        print(f"{name} {form}: rel fwd err {err:.1e}")
        fns[f"{name} {form} fwd"] = lambda f=f, k=k, x=x: jax.block_until_ready(f(k, x))
        fns[f"{name} {form} grad{argnums}"] = lambda g=g, k=k, x=x: jax.block_until_ready(g(k, x))
report_interleaved(fns, repeats=5, width=28)
