"""The one seam through which the models ask for their heavy primitives.

`conv2d`, `conv3x3_of_upsampled`, `conv3x3_of_affine_relu` and `relu_pad_max_pool_3x3_s2` are
plain XLA by default. At float32, where the handlers of `ops/cpu/` are on and can be built, a
CPU lowering takes faster formulations of the same linear maps instead (Winograd 3x3 convs, our
weight gradients, a fused stem pool; docs/cpu.md); the parameters and the results (to rounding)
are the same. The choice is made per lowering platform (`jax.lax.platform_dependent`), never
from the host's default backend, so a GPU or TPU graph is plain XLA whichever host lowers it
(tests/test_lowering.py). Every choice between the two is made here and nowhere else, so the
models stay pure Flax.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu import maxpool as cpu_maxpool
from hanet_jax.ops.cpu import subpixel as cpu_subpixel
from hanet_jax.ops.cpu import winograd as cpu_winograd

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _per_platform(cpu_fn, xla_fn, *args):
    """`cpu_fn(*args)` in a CPU lowering, `xla_fn(*args)` in any other: chosen when the platform
    being lowered for is known, so the compiler never sees both."""
    # Fresh closures each call: jax caches a branch's trace by its function object, and the
    # handlers read their settings (ops/cpu/settings.py) when traced.
    return jax.lax.platform_dependent(*args, cpu=lambda *a: cpu_fn(*a), default=lambda *a: xla_fn(*a))


def _centre_tap(x, kernel, strides, padding) -> bool:
    # On a 1x1 map (SFEB's pooled context) a 3x3 SAME conv's centre tap alone meets data: the
    # others multiply the zero padding. XLA:CPU reversed the whole kernel first (round 15).
    return kernel.shape[0] == 3 and strides == 1 and padding == "SAME" and x.shape[1:3] == (1, 1)


def _xla_conv2d(x, kernel, strides=1, padding="SAME"):
    k = kernel.shape[0]
    if (k == 1 and strides == 1) or _centre_tap(x, kernel, strides, padding):
        # A 1x1 conv is a matmul over channels; XLA runs it much faster as one on the CPU.
        return jnp.einsum("bhwc,cf->bhwf", x, kernel[k // 2, k // 2])
    return jax.lax.conv_general_dilated(x, kernel, window_strides=(strides, strides), padding=padding,
                                        dimension_numbers=DIMENSION_NUMBERS)


def conv2d(x: jax.Array, kernel: jax.Array, *, strides: int = 1, padding: str = "SAME") -> jax.Array:
    """The NHWC conv of `x` with the HWIO `kernel`, no bias."""
    xla = lambda x, kernel: _xla_conv2d(x, kernel, strides, padding)  # noqa: E731
    if kernel.shape[0] == 1 and strides == 1 and cpu_conv.applies_1x1(x, kernel):
        # The einsum; in a CPU lowering its weight gradient runs in our handler.
        return _per_platform(lambda x, kernel: cpu_conv.conv1x1(x, kernel[0, 0]), xla, x, kernel)
    if not _centre_tap(x, kernel, strides, padding) and cpu_conv.applies(x, kernel, strides, padding):
        # Winograd or XLA's conv per shape, and our weight gradient (ops/cpu/conv.py, winograd.py).
        return _per_platform(cpu_conv.conv3x3, xla, x, kernel)
    return xla(x, kernel)


def upsample2x(x: jax.Array, method: str = "nearest") -> jax.Array:
    """Keras `UpSampling2D(2)`: nearest repeats rows and columns; bilinear is a paper option."""
    if method == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if method == "bilinear":
        b, h, w, c = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, c), method="bilinear")
    raise ValueError(f"model.upsampling must be 'nearest' or 'bilinear', got {method!r}")


def subpixel_applies(x: jax.Array, kernel: jax.Array, method: str) -> bool:
    """Whether `conv3x3_of_upsampled` computes on the small map (ops/cpu/subpixel.py)."""
    return method == "nearest" and cpu_subpixel.applies(x, kernel)


def conv3x3_of_upsampled(x: jax.Array, kernel: jax.Array, method: str) -> jax.Array:
    """The 3x3 SAME conv of `upsample2x(x, method)`."""
    if subpixel_applies(x, kernel, method):
        return _per_platform(cpu_subpixel.subpixel_conv3x3,
                             lambda x, kernel: _xla_conv2d(upsample2x(x, method), kernel), x, kernel)
    return conv2d(upsample2x(x, method), kernel)


def fuses_affine_relu(x: jax.Array, features: int) -> bool:
    """Whether `conv3x3_of_affine_relu` runs the 3x3 SAME conv of `x` to `features` in one
    handler; elsewhere the caller applies its BatchNorm and ReLU first."""
    k = jax.ShapeDtypeStruct((3, 3, x.shape[-1], features), x.dtype)
    return cpu_conv.applies(x, k, 1, "SAME") and cpu_winograd.tile_size(*x.shape[1:], features) is not None


def conv3x3_of_affine_relu(x, scale, shift, kernel) -> jax.Array:
    """The 3x3 SAME conv of `relu(x * scale + shift)`: in a CPU lowering an inference BatchNorm
    and its ReLU read into the conv (round 16). Call only where `fuses_affine_relu` holds."""
    def xla(x, scale, shift, kernel):
        return _xla_conv2d(jax.nn.relu(x * scale.astype(x.dtype) + shift.astype(x.dtype)), kernel)
    return _per_platform(cpu_winograd.conv_of_affine_relu, xla, x, scale, shift, kernel)


def _xla_relu_pad_max_pool(x):
    x = jnp.pad(jax.nn.relu(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")


def relu_pad_max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """The DenseNet stem's ReLU, ZeroPadding2D(1) and valid 3x3/2 max-pool; zero padding equals
    -inf padding after a ReLU (>= 0)."""
    if cpu_maxpool.applies(x):
        return _per_platform(cpu_maxpool.relu_pad_max_pool_3x3_s2, _xla_relu_pad_max_pool, x)
    return _xla_relu_pad_max_pool(x)


__all__ = ["conv2d", "conv3x3_of_affine_relu", "conv3x3_of_upsampled", "fuses_affine_relu",
           "relu_pad_max_pool_3x3_s2", "subpixel_applies", "upsample2x"]
