"""Where does the HA-Net train step spend its time on XLA:CPU? Times fwd and fwd+bwd (grads
w.r.t. params and input) of each part in isolation, interleaved, at the bench batch.

    PYTHONPATH=. .venv/bin/python experiments/perf/profile_parts.py [batch]
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.models.densenet import DenseNet121
from hanet_jax.models.hanet import DecoderStage, Head, HANet
from _timing import report_interleaved

B = int(sys.argv[1]) if len(sys.argv) > 1 else 8
rng = np.random.default_rng(0)


def part(module, *shapes, **kw):
    xs = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
    v = module.init(jax.random.key(0), *xs, train=True, **kw)

    def loss(p, *xs):
        out, _ = module.apply({"params": p, "batch_stats": v["batch_stats"]}, *xs, train=True,
                              mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}, **kw)
        return sum(jnp.sum(o ** 2) for o in jax.tree_util.tree_leaves(out))

    fwd = jax.jit(loss)
    grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(xs) + 1))))
    return (lambda: jax.block_until_ready(fwd(v["params"], *xs)),
            lambda: jax.block_until_ready(grad(v["params"], *xs)))


parts = {
    "encoder": part(DenseNet121(), (B, 256, 256, 3)),
    "dec1": part(DecoderStage(256, True), (B, 8, 8, 256), (B, 16, 16, 512)),
    "dec2": part(DecoderStage(128, True), (B, 16, 16, 256), (B, 32, 32, 256)),
    "dec3": part(DecoderStage(64, True), (B, 32, 32, 128), (B, 64, 64, 64)),
    "dec4": part(DecoderStage(32, True), (B, 64, 64, 64), (B, 128, 128, 64)),
    "head": part(Head(), (B, 128, 128, 32)),
    "full model": part(HANet(), (B, 256, 256, 3)),
}
fns = {}
for n, (f, g) in parts.items():
    fns[n + " fwd"] = f
    fns[n + " fwd+bwd"] = g
report_interleaved(fns, repeats=3, width=22)
