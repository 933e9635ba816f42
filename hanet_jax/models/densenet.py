"""DenseNet-121 encoder, named exactly like `keras.applications.DenseNet121`.

Every submodule carries the Keras layer name (`conv1_conv`, `conv2_block1_0_bn`,
`pool2_conv`, `bn`, ...), so porting Keras weights is the identity on names and porting
torchvision weights is one table (see `hanet_jax.port`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax import ops
from hanet_jax.models.layers import BatchNormAffine, Conv, batch_norm

DENSENET_EPS = 1.001e-5  # every BatchNorm in Keras' DenseNet
BLOCKS_121 = (6, 12, 24, 16)
SKIP_NAMES = ("conv1_bn", "pool1", "pool2_pool", "pool3_pool", "pool4_pool")


class DenseNet121(nn.Module):
    """`__call__(x, *, train) -> (features, skips)`.

    `features` is the final `relu` output (1024 channels at 1/32 resolution); `skips` maps
    the Keras layer names `conv1_bn` (the BN output *before* its ReLU, 1/2), `pool1` (1/4),
    `pool2_pool` (1/8), `pool3_pool` (1/16) and `pool4_pool` (1/32) to their tensors.
    Input: any (B, H, W, C) with H and W divisible by 32.
    """

    blocks: Sequence[int] = BLOCKS_121
    growth_rate: int = 32
    epsilon: float = DENSENET_EPS  # torchvision weights carry 1e-5
    dtype: Any = None

    def _bn_relu(self, x, name, train):
        x = batch_norm(name, train=train, epsilon=self.epsilon, dtype=self.dtype)(x)
        return nn.relu(x)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        if x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(f"DenseNet121 input height and width must be multiples of 32, got {x.shape[1:3]}")
        skips = {}
        x = self._stem(x, skips, train)
        for stage, n_layers in enumerate(self.blocks, start=2):
            for i in range(1, n_layers + 1):
                y = self._dense_layer(x, f"conv{stage}_block{i}", train)
                x = jnp.concatenate([x, y], axis=-1)
            x = self._transition(x, stage, skips, train)
        features = self._bn_relu(x, "bn", train)
        return features, skips

    # The pieces below are also what experiments/perf swaps block layouts around.
    def _stem(self, x, skips, train):
        """ZeroPadding2D(3) + valid 7x7/2 conv, BN, ReLU, ZeroPadding2D(1) + valid 3x3/2 max-pool."""
        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
        x = Conv(64, 7, strides=2, padding="VALID", use_bias=False, dtype=self.dtype, name="conv1_conv")(x)
        x = batch_norm("conv1_bn", train=train, epsilon=self.epsilon, dtype=self.dtype)(x)
        skips["conv1_bn"] = x
        # ReLU, ZeroPadding2D(1), pool; zero padding equals -inf padding after a ReLU (>= 0).
        x = ops.relu_pad_max_pool_3x3_s2(x)
        skips["pool1"] = x
        return x

    def _dense_layer(self, x, prefix, train):
        """The `growth_rate` new channels of one dense layer (BN-ReLU-1x1, BN-ReLU-3x3)."""
        y = self._bn_relu(x, f"{prefix}_0_bn", train)
        y = Conv(4 * self.growth_rate, 1, use_bias=False, dtype=self.dtype, name=f"{prefix}_1_conv")(y)
        conv = Conv(self.growth_rate, 3, use_bias=False, dtype=self.dtype, name=f"{prefix}_2_conv")
        if not train and ops.fuses_affine_relu(y, self.growth_rate):
            # Inference on the CPU: the conv's handler applies this BN + ReLU as it reads y.
            affine = BatchNormAffine(epsilon=self.epsilon, name=f"{prefix}_1_bn")(y.shape[-1])
            return conv(y, affine_relu=affine)
        return conv(self._bn_relu(y, f"{prefix}_1_bn", train))

    def _transition(self, x, stage, skips, train):
        """BN-ReLU-1x1 halving the channels, 2x2 average pool; none after the last block.

        Pooled before the (bias-free) 1x1 conv rather than after, as Keras orders them: both are
        linear, so it is the same map up to rounding (~6e-7 relative), at a quarter of the FLOPs
        (docs/performance.md, round 15)."""
        if stage == 1 + len(self.blocks):
            return x
        x = self._bn_relu(x, f"pool{stage}_bn", train)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = Conv(x.shape[-1] // 2, 1, use_bias=False, dtype=self.dtype, name=f"pool{stage}_conv")(x)
        skips[f"pool{stage}_pool"] = x
        return x
