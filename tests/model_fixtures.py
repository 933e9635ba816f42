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


def trained_like_variables(model, size=SIZE, seed: int = 0):
    """`random_variables` made to look trained, so a numerical comparison means something:
    BatchNorm statistics and affines away from 0 and 1 (mean ~ N(0, 0.2), variance in [0.5, 2],
    scale in [0.6, 1.4], offsets ~ N(0, 0.1)), and the head scaled so the logits spread over
    several units instead of sitting near 0."""
    rng = np.random.default_rng(seed + 1)

    def fill(path, leaf):
        name, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
        if "'head'" in name and "kernel" in name:
            return 1.5 * leaf
        if "'mean'" in name:
            return rng.normal(0.0, 0.2, leaf.shape).astype(np.float32)
        if "'var'" in name:
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        if "scale" in name:
            return rng.uniform(0.6, 1.4, leaf.shape).astype(np.float32)
        if "bias" in name:
            return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)
        return leaf

    variables = jax.tree_util.tree_map_with_path(fill, random_variables(model, size, seed))
    return jax.tree.map(jnp.asarray, variables)
