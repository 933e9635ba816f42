"""Train-mode BN + ReLU on XLA:CPU: are the per-channel reductions over (B, H, W) the cost?

  reduce : x.mean over axes (0, 1, 2) (what flax's BatchNorm does)
  matvec : the sums as ones(BHW) @ x.reshape(BHW, C) (a GEMV)

    PYTHONPATH=. .venv/bin/python experiments/perf/bn_reduce.py
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import report_interleaved


def stats_reduce(x):
    m = x.mean(axis=(0, 1, 2))
    return m, jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(m)


def stats_matvec(x):
    n = x.shape[0] * x.shape[1] * x.shape[2]
    x2 = x.reshape(n, x.shape[-1])
    ones = jnp.full((n,), 1.0 / n, x.dtype)
    m = ones @ x2
    return m, ones @ (x2 * x2) - jnp.square(m)


def bn_relu(x, s, b, stats):
    m, v = stats(x)
    return jax.nn.relu((x - m) * jax.lax.rsqrt(v + 1e-5) * s + b)


rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(8, 64, 64, 192)), jnp.float32)
s, b = jnp.ones(192), jnp.zeros(192)
fns = {}
for name, st in (("reduce", stats_reduce), ("matvec", stats_matvec)):
    f = jax.jit(lambda x, st=st: st(x))
    fb = jax.jit(lambda x, s, b, st=st: bn_relu(x, s, b, st))
    g = jax.jit(jax.grad(lambda x, s, b, st=st: jnp.sum(bn_relu(x, s, b, st) ** 2), argnums=(0, 1, 2)))
    fns[name + " stats"] = lambda f=f: jax.block_until_ready(f(x))
    fns[name + " bn_relu fwd"] = lambda f=fb: jax.block_until_ready(f(x, s, b))
    fns[name + " bn_relu grad"] = lambda g=g: jax.block_until_ready(g(x, s, b))
print("stats diff", [float(jnp.abs(a - c).max()) for a, c in zip(stats_reduce(x), stats_matvec(x))])
report_interleaved(fns, repeats=7, width=24)
