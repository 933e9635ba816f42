"""U-Net (Ronneberger et al., MICCAI 2015), a baseline for the comparison of the paper's Table 6.

Four down-sampling stages; widths `base_filters * (1, 2, 4, 8, 16)` (64 .. 1024 by default):

    enc1..enc4, bottleneck   ConvBlock: (3x3 same conv -> BN -> ReLU) x 2, 2x2 max-pool between
    up4..up1                 x2 up to the skip's grid and width (see `upsampling`)
    dec4..dec1               ConvBlock on concat([skip, up])
    head                     1x1 conv to 1 logit

`upsampling`: `"nearest"` (default) or `"bilinear"` is `UpSampling2D` -> 3x3 conv -> BN -> ReLU,
the "up_conv" of the widely used PyTorch U-Net (LeeJunHyun/Image_Segmentation): 34.53 M, and
without the BatchNorm affines 34.51 M, the paper's Table 6 figure. `"transpose"` is Ronneberger's
2x2 stride-2 "up-convolution" (`UpConv2x2`, no BN or activation after it): 31.04 M, 31.03 M
without BN.

The convs have biases although a BatchNorm follows (as the reference implementations); kernels
are he_normal, the head glorot_uniform; BatchNorm is `layers.batch_norm` (Keras eps 1e-3,
momentum 0.99). Parameter counts: docs/baselines.md.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax import ops
from hanet_jax.models.hanet import DTYPES
from hanet_jax.models.layers import Conv, batch_norm, he_normal

UPSAMPLING = ("nearest", "bilinear", "transpose")
DEPTH = 4  # down-sampling stages; H and W must be multiples of 2**DEPTH


def widths(base_filters: int) -> tuple[int, ...]:
    """The five level widths, finest first."""
    return tuple(base_filters * 2**i for i in range(DEPTH + 1))


def check_fields(model) -> None:
    """The checks the three baselines share: `base_filters`, `dtype`, `upsampling`."""
    b = model.base_filters
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ValueError(f"model.base_filters must be a positive int, got {b!r}")
    if model.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {tuple(DTYPES)}, got {model.dtype!r}")
    if model.upsampling not in UPSAMPLING:
        raise ValueError(f"model.upsampling must be one of {UPSAMPLING}, got {model.upsampling!r}")


def check_input(x: jax.Array, name: str) -> None:
    m = 2**DEPTH
    if x.ndim != 4 or x.shape[1] % m or x.shape[2] % m:
        raise ValueError(f"{name} input must be (B, H, W, C) with H and W multiples of {m}, got {x.shape}")


def max_pool2x2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


class ConvBlock(nn.Module):
    """(3x3 same conv -> BN -> ReLU) x 2 (`conv1`, `bn1`, `conv2`, `bn2`): U-Net's level and
    UNet++'s "VGG block"."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for i in (1, 2):
            x = Conv(self.features, 3, kernel_init=he_normal, dtype=self.dtype, name=f"conv{i}")(x)
            x = nn.relu(batch_norm(f"bn{i}", train=train, dtype=self.dtype)(x))
        return x


class UpConv2x2(nn.Module):
    """A 2x2 stride-2 transposed conv: out[2i+a, 2j+b] = x[i, j] @ kernel[a, b] + bias (the
    PyTorch `ConvTranspose2d` / Keras `Conv2DTranspose` arithmetic, no kernel flip). The strides
    equal the kernel, so the taps never overlap: one 1x1 conv to 4 * features through the `ops`
    seam, then depth-to-space. Parameters "kernel" (2, 2, in, out) and "bias"."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, cin = x.shape
        kernel = self.param("kernel", he_normal, (2, 2, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        dtype = self.dtype or x.dtype
        # (a, b, in, out) -> (in, a, b, out) -> a 1x1 kernel whose output channel is (a, b, out).
        k = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(1, 1, cin, 4 * self.features).astype(dtype)
        y = ops.conv2d(x.astype(dtype), k)
        y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(dtype)


class Up(nn.Module):
    """x2 up-sampling to `features` channels: `UpConv2x2` (`"transpose"`) or upsample -> 3x3
    conv -> BN -> ReLU (`conv`, `bn`; the conv reads the upsampled map through `ops`)."""

    features: int
    upsampling: str = "nearest"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.upsampling == "transpose":
            return UpConv2x2(self.features, dtype=self.dtype, name="upconv")(x)
        x = Conv(self.features, 3, kernel_init=he_normal, dtype=self.dtype, name="conv")(x, self.upsampling)
        return nn.relu(batch_norm("bn", train=train, dtype=self.dtype)(x))


class Baseline(nn.Module):
    """What the three baselines share: their fields, their checks, and the input cast. Each maps
    float images in [0, 1], (B, H, W, 3) with H and W multiples of 16, to float32 logits
    (B, H, W, 1); parameters and BN statistics are float32 whatever `dtype` (the compute dtype)."""

    base_filters: int = 64
    upsampling: str = "nearest"  # or "bilinear" (then a 3x3 conv), or "transpose" (2x2 up-conv)
    dtype: str = "float32"

    def setup_checks(self):
        check_fields(self)

    def prepare(self, x: jax.Array) -> tuple[jax.Array, Any]:
        """(`x` in the compute dtype, that dtype), after the field and input checks."""
        self.setup_checks()
        check_input(x, type(self).__name__)
        dtype = DTYPES[self.dtype]
        return x.astype(jnp.float32).astype(dtype), dtype


def encoder_decoder(x: jax.Array, base_filters: int, upsampling: str, dtype, *, train: bool,
                    gate: Callable | None = None) -> jax.Array:
    """U-Net's body and head, built in the calling module (`enc1`..`enc4`, `bottleneck`,
    `up4`..`up1`, `dec4`..`dec1`, `head`); `gate(i, g, skip)` (Attention U-Net) replaces level
    i's skip before the concat."""
    w = widths(base_filters)
    skips = []
    for i in range(DEPTH):
        x = ConvBlock(w[i], dtype=dtype, name=f"enc{i + 1}")(x, train=train)
        skips.append(x)
        x = max_pool2x2(x)
    x = ConvBlock(w[DEPTH], dtype=dtype, name="bottleneck")(x, train=train)
    for i in reversed(range(DEPTH)):
        x = Up(w[i], upsampling, dtype=dtype, name=f"up{i + 1}")(x, train=train)
        skip = skips[i] if gate is None else gate(i, x, skips[i])
        x = jnp.concatenate([skip, x], axis=-1)
        x = ConvBlock(w[i], dtype=dtype, name=f"dec{i + 1}")(x, train=train)
    return Conv(1, 1, dtype=dtype, name="head")(x).astype(jnp.float32)


class UNet(Baseline):
    """U-Net (module docstring); `__call__(x, *, train) -> logits`."""

    base_filters: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x, dtype = self.prepare(x)
        return encoder_decoder(x, self.base_filters, self.upsampling, dtype, train=train)


__all__ = ["Baseline", "ConvBlock", "UNet", "Up", "UpConv2x2", "UPSAMPLING", "check_fields", "check_input",
           "encoder_decoder", "max_pool2x2", "widths"]
