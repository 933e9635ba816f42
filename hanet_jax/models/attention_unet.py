"""Attention U-Net (Oktay et al., MIDL 2018), a baseline for the comparison of the paper's Table 6.

`unet.UNet` with an additive attention gate on each skip: at decoder level i, the up-sampled
decoder map g (`up{i}`) gates the encoder skip x (`enc{i}`) before the concat:

    q     = ReLU(W_g g + W_x x)        W_g, W_x: 1x1 convs to F_int = C / 2   (`gate{i}`)
    alpha = sigmoid(psi q)             psi: 1x1 conv to 1 channel
    x'    = alpha * x                  then `dec{i}` = ConvBlock(concat([x', g]))

The gate works on one grid (g is already up-sampled to the skip's), as in the widely used PyTorch
`AttU_Net` (LeeJunHyun/Image_Segmentation); Oktay's own code takes g one level coarser and
strides W_x by 2 instead, and resamples alpha up. Bias on W_g and psi and not on W_x (Oktay's
`GridAttentionBlock`: the two biases before the sum would be one); no BatchNorm in the gate (the
PyTorch `AttU_Net` puts one after each of its three 1x1 convs; Oktay one on a 1x1 output
transform of x'). Everything else, `upsampling` included, is `unet.UNet`'s.

`base_filters` defaults to 32 (widths 32 .. 512): 8.72 M parameters against Table 6's 8.14 M; 64
gives 34.88 M (docs/baselines.md).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.models.hanet import DTYPES
from hanet_jax.models.layers import Conv, he_normal
from hanet_jax.models.unet import DEPTH, ConvBlock, Up, check_fields, check_input, max_pool2x2, widths


class AttentionGate(nn.Module):
    """alpha * x with alpha = sigmoid(psi(ReLU(W_g g + W_x x))), (B, H, W, 1); `w_g`, `w_x`,
    `psi`. `intermediates`: `alpha`."""

    inter_features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, g: jax.Array, x: jax.Array) -> jax.Array:
        f = self.inter_features
        q = Conv(f, 1, kernel_init=he_normal, dtype=self.dtype, name="w_g")(g)
        q = q + Conv(f, 1, use_bias=False, kernel_init=he_normal, dtype=self.dtype, name="w_x")(x)
        alpha = jax.nn.sigmoid(Conv(1, 1, dtype=self.dtype, name="psi")(nn.relu(q)))
        self.sow("intermediates", "alpha", alpha)
        return x * alpha


class AttentionUNet(nn.Module):
    """`__call__(x, *, train) -> logits (B, H, W, 1)` float32, for float images in [0, 1] of shape
    (B, H, W, 3), H and W multiples of 16. Parameters and BN statistics are float32 whatever
    `dtype` (the compute dtype)."""

    base_filters: int = 32
    upsampling: str = "nearest"  # or "bilinear" (then a 3x3 conv), or "transpose" (2x2 up-conv)
    dtype: str = "float32"

    def setup_checks(self):
        check_fields(self)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        self.setup_checks()
        check_input(x, "AttentionUNet")
        dtype = DTYPES[self.dtype]
        x = x.astype(jnp.float32).astype(dtype)
        w = widths(self.base_filters)
        skips = []
        for i in range(DEPTH):
            x = ConvBlock(w[i], dtype=dtype, name=f"enc{i + 1}")(x, train=train)
            skips.append(x)
            x = max_pool2x2(x)
        x = ConvBlock(w[DEPTH], dtype=dtype, name="bottleneck")(x, train=train)
        for i in reversed(range(DEPTH)):
            x = Up(w[i], self.upsampling, dtype=dtype, name=f"up{i + 1}")(x, train=train)
            skip = AttentionGate(max(1, w[i] // 2), dtype=dtype, name=f"gate{i + 1}")(x, skips[i])
            x = jnp.concatenate([skip, x], axis=-1)
            x = ConvBlock(w[i], dtype=dtype, name=f"dec{i + 1}")(x, train=train)
        logits = Conv(1, 1, dtype=dtype, name="head")(x)
        return logits.astype(jnp.float32)


__all__ = ["AttentionGate", "AttentionUNet"]
