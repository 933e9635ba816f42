"""UNet++ (Zhou et al., DLMIA 2018), a baseline for the comparison of the paper's Table 6.

Nodes X^{i,j} (`x_{i}_{j}`), level i = 0..4 (widths `base_filters * 2**i`, 32 .. 512 by
default, Zhou's), j = 0..4-i; each node is a "VGG block" (`unet.ConvBlock`: (3x3 conv -> BN ->
ReLU) x 2):

    X^{i,0} = block(maxpool2x2(X^{i-1,0}))                      (X^{0,0} = block(image))
    X^{i,j} = block(concat([X^{i,0}, ..., X^{i,j-1}, up(X^{i+1,j-1})]))     j >= 1

`head` is a 1x1 conv to 1 logit on X^{0,4}: deep supervision off (Zhou's X^{0,1..3} heads are
not built; the nodes still feed X^{0,4} through the dense skips).

`upsampling`: `"nearest"` (default) or `"bilinear"` is a parameter-free x2 resize, so
up(X^{i+1,j-1}) keeps its 2C channels (as the PyTorch `NestedUNet`, 4uiiurz1/pytorch-nested-unet):
9.16 M at the defaults; `"transpose"` is Zhou's Keras `Conv2DTranspose(C, 2, strides=2)`
(`up_{i}_{j}`, `unet.UpConv2x2`), which with BatchNorm gives 9.05 M and without it exactly
Zhou's published 9.04 M (docs/baselines.md). Zhou's blocks also have dropout and no BN; ours
are conv -> BN -> ReLU, as U-Net's here, and have no dropout.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.models.layers import Conv, upsample2x
from hanet_jax.models.unet import DEPTH, Baseline, ConvBlock, UpConv2x2, max_pool2x2, widths


class UNetPlusPlus(Baseline):
    """UNet++ (module docstring); `__call__(x, *, train) -> logits`. `intermediates`: node
    X^{i,j} as `node_{i}_{j}`. `upsampling="transpose"` is Zhou's 2x2 transposed conv."""

    base_filters: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x, dtype = self.prepare(x)
        w = widths(self.base_filters)
        nodes: dict[tuple[int, int], jax.Array] = {}

        def node(i: int, j: int, inputs: jax.Array) -> None:
            nodes[i, j] = ConvBlock(w[i], dtype=dtype, name=f"x_{i}_{j}")(inputs, train=train)
            self.sow("intermediates", f"node_{i}_{j}", nodes[i, j])

        # Zhou's order: down the backbone, each new level followed by its anti-diagonal i + j = d.
        for d in range(DEPTH + 1):
            node(d, 0, x if d == 0 else max_pool2x2(nodes[d - 1, 0]))
            for j in range(1, d + 1):
                i = d - j
                if self.upsampling == "transpose":
                    up = UpConv2x2(w[i], dtype=dtype, name=f"up_{i}_{j}")(nodes[i + 1, j - 1])
                else:
                    up = upsample2x(nodes[i + 1, j - 1], self.upsampling)
                node(i, j, jnp.concatenate([nodes[i, k] for k in range(j)] + [up], axis=-1))
        logits = Conv(1, 1, dtype=dtype, name="head")(nodes[0, DEPTH])
        return logits.astype(jnp.float32)


__all__ = ["UNetPlusPlus"]
