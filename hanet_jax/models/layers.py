"""Building blocks shared by the encoder and the decoder.

`Conv` owns the same parameters as `flax.linen.Conv` ("kernel" (kh, kw, in, out) and
"bias"), so checkpoints and ports are indifferent to how it computes. Keeping the
arithmetic here lets the CPU path pick faster formulations without touching the parameter
tree: a 1x1 conv is a matmul; on the CPU the 3x3 conv runs as Winograd (`winograd.py`) and
both convs' weight gradients in our loop (`blas_conv.py`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.ops.cpu import conv as blas_conv
from hanet_jax.ops.cpu import winograd

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
        `winograd.fuses_affine_relu` holds: an inference BatchNorm read into the conv)."""
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        kernel = kernel.astype(dtype)
        if affine_relu is not None:
            y = winograd.conv_of_affine_relu(x, *affine_relu, kernel)
        elif upsampling is not None and self._subpixel_applies(x, kernel, upsampling):
            y = subpixel_conv3x3(x, kernel)
        else:
            y = self._conv(x if upsampling is None else upsample2x(x, upsampling), kernel)
        if self.use_bias:
            bias = self.param("bias", zeros, (self.features,))
            y = y + bias.astype(dtype)
        return y

    def _subpixel_applies(self, x, kernel, upsampling) -> bool:
        # Only where the kernel is small: the handler transforms the 4x wider kernel on every
        # call, which cost more than it saved at 64->64 and up (round 16, subpixel_shapes.py).
        c, f = kernel.shape[2:]
        return (upsampling == "nearest" and self.kernel_size == 3 and self.strides == 1
                and self.padding == "SAME" and c * f <= SUBPIXEL_MAX_WEIGHTS
                and blas_conv.applies(x, kernel, 1, "SAME")
                and winograd.tile_size(*x.shape[1:], 4 * f) is not None)

    def _conv(self, x, kernel):
        k = self.kernel_size
        # On a 1x1 map (SFEB's pooled context) a 3x3 SAME conv's centre tap alone meets data: the
        # others multiply the zero padding. XLA:CPU reversed the whole kernel first (round 15).
        centre_tap = k == 3 and self.strides == 1 and self.padding == "SAME" and x.shape[1:3] == (1, 1)
        if k == 1 and self.strides == 1 and blas_conv.applies_1x1(x, kernel):
            # The einsum below; on the CPU its weight gradient runs in our handler.
            y = blas_conv.conv1x1(x, kernel[0, 0])
        elif (k == 1 and self.strides == 1) or centre_tap:
            # A 1x1 conv is a matmul over channels; XLA:CPU runs it much faster as one.
            y = jnp.einsum("bhwc,cf->bhwf", x, kernel[k // 2, k // 2])
        elif blas_conv.applies(x, kernel, self.strides, self.padding):
            # Winograd or XLA's conv per shape, and our weight gradient (blas_conv.py, winograd.py).
            y = blas_conv.conv3x3(x, kernel)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(self.strides, self.strides),
                padding=self.padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        return y


# [output phase, tap offset -1/0/+1 on the small map, kernel row]: which of a 3x3 kernel's rows
# meet which row of the small map, for the even (0) and odd (1) rows of its nearest 2x upsampling.
_PHASE_TAPS = np.zeros((2, 3, 3), np.float32)
_PHASE_TAPS[0, 0, 0] = _PHASE_TAPS[0, 1, 1] = _PHASE_TAPS[0, 1, 2] = 1
_PHASE_TAPS[1, 1, 0] = _PHASE_TAPS[1, 1, 1] = _PHASE_TAPS[1, 2, 2] = 1
SUBPIXEL_MAX_WEIGHTS = 32 * 16  # C x F: the head's conv


def subpixel_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 3x3 SAME conv of `upsample2x(x)` (nearest), computed on x: each of the four output
    phases is a 3x3 conv of x whose kernel sums the taps that fall on the same pixel of x, so one
    conv of x to 4F channels, then depth-to-space. The same multiplications as on the large map,
    from a quarter of the input (the upsampled map is never written): 2.1x faster for the head's
    32->16 conv at 128x128 (round 16). Equal up to the rounding of the summed taps."""
    c, f = kernel.shape[2:]
    k4 = jnp.einsum("apk,bql,klcf->pqcabf", _PHASE_TAPS, _PHASE_TAPS, kernel).reshape(3, 3, c, 4 * f)
    y = blas_conv.conv3x3(x, k4.astype(kernel.dtype))
    b, h, w, _ = y.shape
    return y.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, f)


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


def upsample2x(x: jax.Array, method: str = "nearest") -> jax.Array:
    """Keras `UpSampling2D(2)`: nearest repeats rows and columns; bilinear is a paper option."""
    if method == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if method == "bilinear":
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")
    raise ValueError(f"model.upsampling must be 'nearest' or 'bilinear', got {method!r}")
