"""One DenseNet stage (train mode: batch-stat BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv, concat), as
plain JAX, fwd+grad (params and input), with the 3x3 conv swapped for diagnostics:

  lax   : lax.conv_general_dilated (what the model runs)
  skip3 : the 3x3 conv replaced by a 1x1 einsum (wrong numbers; shows the 3x3 conv's share)

    PYTHONPATH=. .venv/bin/python experiments/perf/dense_stage.py [B H C0 n_layers]...
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import report_interleaved


def bn_relu(x, scale, bias):
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(mean)
    return jax.nn.relu((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias)


def conv3(x, k, form):
    if form == "skip3":
        return jnp.einsum("bhwc,cf->bhwf", x, k[1, 1])
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def stage(params, x, form):
    for p in params:
        y = bn_relu(x, p["s0"], p["b0"])
        y = jnp.einsum("bhwc,cf->bhwf", y, p["k1"])
        y = bn_relu(y, p["s1"], p["b1"])
        y = conv3(y, p["k3"], form)
        x = jnp.concatenate([x, y], axis=-1)
    return x


def make(b, h, c0, n, g=32):
    rng = np.random.default_rng(0)
    params, c = [], c0
    for _ in range(n):
        params.append({"s0": jnp.ones(c), "b0": jnp.zeros(c), "k1": jnp.asarray(rng.normal(size=(c, 4 * g)) / np.sqrt(c), jnp.float32),
                       "s1": jnp.ones(4 * g), "b1": jnp.zeros(4 * g),
                       "k3": jnp.asarray(rng.normal(size=(3, 3, 4 * g, g)) / np.sqrt(9 * 4 * g), jnp.float32)})
        c += g
    return params, jnp.asarray(rng.normal(size=(b, h, h, c0)), jnp.float32)


if __name__ == "__main__":
    a = [int(v) for v in sys.argv[1:]]
    settings = [tuple(a[i:i + 4]) for i in range(0, len(a), 4)] or [(8, 64, 64, 6), (8, 32, 128, 12)]
    fns = {}
    for b, h, c0, n in settings:
        params, x = make(b, h, c0, n)
        for form in ("lax", "skip3"):
            f = jax.jit(lambda p, x, form=form: stage(p, x, form))
            g = jax.jit(jax.grad(lambda p, x, form=form: jnp.sum(stage(p, x, form) ** 2), argnums=(0, 1)))
            fns[f"{h}x{h} n={n} {form} fwd"] = lambda f=f, p=params, x=x: jax.block_until_ready(f(p, x))
            fns[f"{h}x{h} n={n} {form} grad"] = lambda g=g, p=params, x=x: jax.block_until_ready(g(p, x))
    report_interleaved(fns, repeats=5, width=30)
