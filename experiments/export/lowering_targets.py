"""Which custom-call targets each platform's lowering of the model holds (issue 33's closing note).

A tiny HA-Net (full variant, one layer per dense block, 64x64, float32) on one device: the
inference forward and the gradient of a loss, lowered on this host for cpu, cuda and tpu, with
the CPU handlers at their start-up settings; then the same through `settings.disabled()`, the
trace every export uses. Prints one JSON object. tests/test_lowering.py asserts the same on a
4-device mesh with train.py's step (where the CPU's names hide inside CustomSPMDPartitioning).

    python experiments/export/lowering_targets.py
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.models.hanet import HANet
from hanet_jax.ops.cpu import settings

model = HANet(variant="full", encoder_blocks=(1, 1, 1, 1))
x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32))
variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
forward = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
# The training forward (BatchNorm on the batch, dropout), as train.py differentiates it.
gradient = jax.grad(lambda v, x: jnp.sum(model.apply(v, x, train=True, mutable=["batch_stats"],
                                                     rngs={"dropout": jax.random.key(1)})[0]))


def targets(fn, platform):
    text = jax.jit(fn).trace(variables, x).lower(lowering_platforms=(platform,)).as_text()
    return sorted(set(re.findall(r"stablehlo\.custom_call @([\w.\-]+)", text)))


found = {}
for label, context in (("start-up settings", settings.using), ("settings.disabled()", settings.disabled)):
    with context():
        found[label] = {f"{name}/{platform}": targets(fn, platform)
                        for name, fn in (("forward", forward), ("gradient", gradient))
                        for platform in ("cpu", "cuda", "tpu")}
print(json.dumps({"jax": jax.__version__, "handlers_at_start_up": settings.current().handlers, **found}, indent=1))
