"""Building blocks shared by the encoder and the decoder.

`Conv` owns the same parameters as `flax.linen.Conv` ("kernel" (kh, kw, in, out) and
"bias"), so checkpoints and ports are indifferent to how it computes: it asks `hanet_jax.ops`
for the arithmetic, which may pick faster formulations on the CPU without touching the
parameter tree.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax import ops
from hanet_jax.ops import upsample2x  # noqa: F401  (the decoder's upsampling, re-exported)

Initializer = Callable[..., jax.Array]

# Keras initialisers, by the names the release uses.
he_normal = nn.initializers.he_normal()  # truncated normal, std sqrt(2 / fan_in), as Keras
glorot_uniform = nn.initializers.glorot_uniform()
zeros = nn.initializers.zeros


def keras_uniform(limit: float = 0.05) -> Initializer:
    """Keras `RandomUniform(-limit, limit)`, the default `Embedding` initialiser."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


class Conv(nn.Module):
    """2-D convolution, NHWC, with Keras' `same`/`valid` padding."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    padding: str = "SAME"
    use_bias: bool = True
    kernel_init: Initializer = glorot_uniform
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, upsampling: str | None = None, affine_relu=None) -> jax.Array:
        """The conv of `x`, or with `upsampling` of `upsample2x(x, upsampling)`, or with
        `affine_relu=(scale, shift)` of `relu(x * scale + shift)` (3x3 only, where
        `ops.fuses_affine_relu` holds: an inference BatchNorm read into the conv)."""
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        kernel = kernel.astype(dtype)
        if affine_relu is not None:
            y = ops.conv3x3_of_affine_relu(x, *affine_relu, kernel)
        elif upsampling is not None and k == 3 and self.strides == 1 and self.padding == "SAME":
            y = ops.conv3x3_of_upsampled(x, kernel, upsampling)
        else:
            if upsampling is not None:
                x = upsample2x(x, upsampling)
            y = ops.conv2d(x, kernel, strides=self.strides, padding=self.padding)
        if self.use_bias:
            bias = self.param("bias", zeros, (self.features,))
            y = y + bias.astype(dtype)
        return y


def batch_norm(name: str, *, train: bool, epsilon: float = 1e-3, dtype: Any = None) -> nn.BatchNorm:
    """Keras `BatchNormalization` semantics: momentum 0.99 means the same in Flax.

    Parameters and statistics stay float32 whatever the compute dtype. The batch variance is
    two-pass, mean((x - mean)^2), as TensorFlow's `moments`: Flax's default one-pass
    E[x^2] - E[x]^2 cancels badly on small batches and tiny maps, which made runs on different
    device counts drift apart by ~1e-2 within a few steps.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.99,
        epsilon=epsilon,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class BatchNormAffine(nn.Module):
    """An inference `batch_norm` as its per-channel `(scale, shift)`: x * scale + shift. The same
    variables as `flax.linen.BatchNorm` (params scale, bias; batch_stats mean, var), so the two
    are interchangeable in a parameter tree; for convs that apply it as they read (`Conv`)."""

    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, features: int) -> tuple[jax.Array, jax.Array]:
        gamma = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        beta = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
        var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
        scale = gamma * jax.lax.rsqrt(var.value + self.epsilon)
        return scale, beta - mean.value * scale
