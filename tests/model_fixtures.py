"""Small real models shared by test modules (random weights, no compilation to build them)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.models.hanet import HANet

SIZE = (64, 64)


def random_variables(model, size=SIZE, seed: int = 0):
    """Variables for `model` at `size`, drawn with NumPy from the shapes of `model.init`
    (`jax.eval_shape`: no compilation, ~1 s instead of ~20 s for DenseNet): kernels He-normal,
    biases 0, BatchNorm scale 1, offset 0, mean 0, variance 1."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        if "scale" in name or "'var'" in name:
            return np.ones(leaf.shape, np.float32)
        return np.zeros(leaf.shape, np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    return jax.tree.map(jnp.asarray, variables)


@functools.lru_cache(maxsize=None)
def tiny_model(variant: str = "no_tam", seed: int = 0):
    """(model, variables) of a randomly initialised HA-Net at 64x64, shared by the test modules
    (`random_variables`)."""
    model = HANet(variant=variant)
    return model, random_variables(model, SIZE, seed)
