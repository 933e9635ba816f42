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

from hanet_jax.models.layers import Conv, he_normal
from hanet_jax.models.unet import Baseline, encoder_decoder, widths


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


class AttentionUNet(Baseline):
    """Attention U-Net (module docstring); `__call__(x, *, train) -> logits`."""

    base_filters: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x, dtype = self.prepare(x)
        w = widths(self.base_filters)

        def gate(i, g, skip):
            return AttentionGate(max(1, w[i] // 2), dtype=dtype, name=f"gate{i + 1}")(g, skip)

        return encoder_decoder(x, self.base_filters, self.upsampling, dtype, train=train, gate=gate)


__all__ = ["AttentionGate", "AttentionUNet"]
