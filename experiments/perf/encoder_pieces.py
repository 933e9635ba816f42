"""Encoder pieces on XLA:CPU at batch 8 (256x256 input): fwd and grad, interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/encoder_pieces.py
"""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _timing import report_interleaved

rng = np.random.default_rng(0)
r = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
B = 8


def stem_conv(k, x):
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    return jax.lax.conv_general_dilated(x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def maxpool(x):
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def maxpool_slices(x):
    """3x3/2 max-pool of a zero-padded ReLU output as a max over 9 strided slices."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(3):
        for j in range(3):
            t = x[:, i:i + h:2, j:j + w:2, :]
            out = t if out is None else jnp.maximum(out, t)
    return out


def avgpool(x):
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def avgpool_reshape(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


cases = {
    "stem conv (dK only)": (lambda k, x: jnp.sum(stem_conv(k, x) ** 2), (r(7, 7, 3, 64), r(B, 256, 256, 3)), 0),
    "maxpool": (lambda x: jnp.sum(maxpool(x) ** 2), (jax.nn.relu(r(B, 128, 128, 64)),), 0),
    "maxpool slices": (lambda x: jnp.sum(maxpool_slices(x) ** 2), (jax.nn.relu(r(B, 128, 128, 64)),), 0),
    "avgpool 64x64x128": (lambda x: jnp.sum(avgpool(x) ** 2), (r(B, 64, 64, 128),), 0),
    "avgpool reshape": (lambda x: jnp.sum(avgpool_reshape(x) ** 2), (r(B, 64, 64, 128),), 0),
}
fns = {}
for n, (f, args, argnum) in cases.items():
    jf, jg = jax.jit(f), jax.jit(jax.grad(f, argnums=argnum))
    fns[n + " fwd"] = lambda jf=jf, args=args: jax.block_until_ready(jf(*args))
    fns[n + " grad"] = lambda jg=jg, args=args: jax.block_until_ready(jg(*args))
print("maxpool slices == maxpool:", bool(jnp.all(maxpool(cases["maxpool"][1][0]) == maxpool_slices(cases["maxpool"][1][0]))))
report_interleaved(fns, repeats=5, width=28)
