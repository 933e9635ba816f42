"""HA-Net assembled: DenseNet-121 encoder, ConvBlock + TAM bottleneck, SFEB decoder.

`HANet(variant=...)` covers the paper's ablation rows (Table 3):

| variant          | bottleneck                | decoder stages |
|------------------|---------------------------|----------------|
| `full`           | ConvBlock -> TAM          | SFEB on each   |
| `no_tam`         | ConvBlock                 | SFEB on each   |
| `no_tam_no_sfeb` | ConvBlock                 | plain          |
| `baseline`       | none (DenseNet `relu`)    | plain          |

Fields after `variant` are the paper-only options; their defaults reproduce the release.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.models.attention import TransformerAttentionModule
from hanet_jax.models.densenet import BLOCKS_121, DenseNet121
from hanet_jax.models.layers import Conv, batch_norm, he_normal, upsample2x
from hanet_jax.models.sfeb import SFEB

VARIANTS = ("full", "no_tam", "no_tam_no_sfeb", "baseline")
# (encoder skip, filters) for decoder stages dec1..dec4, deepest first.
DECODER_STAGES = (("pool3_pool", 256), ("pool2_pool", 128), ("pool1", 64), ("conv1_bn", 32))
BOTTLENECK_FILTERS = 256
HEAD_FILTERS = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def conv_block(x, filters, *, train, order, dtype, conv_name, bn_name, upsampling=None):
    """The release's `Conv2D(relu) -> BatchNorm` (order `conv_relu_bn`), or the paper's
    `conv -> BN -> ReLU` (order `conv_bn_relu`). 3x3 same, he_normal, with bias. With
    `upsampling`, of `upsample2x(x, upsampling)` (`Conv` may skip making it)."""
    x = Conv(filters, 3, kernel_init=he_normal, dtype=dtype, name=conv_name)(x, upsampling)
    bn = batch_norm(bn_name, train=train, dtype=dtype)
    if order == "conv_relu_bn":
        return bn(nn.relu(x))
    if order == "conv_bn_relu":
        return nn.relu(bn(x))
    raise ValueError(f"model.conv_order must be 'conv_relu_bn' or 'conv_bn_relu', got {order!r}")


class DecoderStage(nn.Module):
    """Upsample x2 -> [SFEB] -> concat([skip, x]) -> conv block (`conv`, `bn`)."""

    filters: int
    use_sfeb: bool
    upsampling: str = "nearest"
    conv_order: str = "conv_relu_bn"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, skip, *, train: bool):
        x = upsample2x(x, self.upsampling)
        if self.use_sfeb:
            x = SFEB(dtype=self.dtype, name="sfeb")(x, train=train)
            self.sow("intermediates", "sfeb_out", x)
        x = jnp.concatenate([skip.astype(x.dtype), x], axis=-1)
        return conv_block(
            x, self.filters, train=train, order=self.conv_order, dtype=self.dtype, conv_name="conv", bn_name="bn"
        )


class Head(nn.Module):
    """Upsample x2 -> conv block (16) -> a second BatchNorm (the release stacks two) -> 1x1 conv.

    Returns logits; the release's sigmoid is applied by callers.
    """

    upsampling: str = "nearest"
    conv_order: str = "conv_relu_bn"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = conv_block(
            x, HEAD_FILTERS, train=train, order=self.conv_order, dtype=self.dtype, conv_name="conv", bn_name="bn1",
            upsampling=self.upsampling,
        )
        x = batch_norm("bn2", train=train, dtype=self.dtype)(x)
        return Conv(1, 1, dtype=self.dtype, name="out_conv")(x)


class HANet(nn.Module):
    """`__call__(x, *, train) -> logits (B, H, W, 1)` for float images in [0, 1], (B, H, W, 3).

    H and W must be multiples of 32; the GSA matrix and position tables are sized from the
    bottleneck grid (H/32, W/32), so a model is tied to the input size it was built for.
    """

    variant: str = "full"
    upsampling: str = "nearest"  # paper option: "bilinear"
    conv_order: str = "conv_relu_bn"  # paper option: "conv_bn_relu"
    sdpa_learned_projections: bool = False  # paper option: W_q, W_k, W_v
    tam_merge: str = "sum"  # paper option: "concat" of [G, S, E + pe]
    input_normalization: str = "none"  # "imagenet": (x - mean) / std, for ImageNet encoders
    dropout_rate: float = 0.1
    encoder_epsilon: float = 1.001e-5  # BN eps of the encoder: Keras 1.001e-5, torchvision 1e-5
    dtype: str = "float32"  # compute dtype; parameters and BN statistics stay float32
    # Dense layers per encoder block: DenseNet-121's. Fewer only for fast tests (no released
    # weights fit them; the names and the rest of the graph stay the same).
    encoder_blocks: tuple[int, ...] = BLOCKS_121
    # nnU-Net's deep supervision: a 1x1 head (`ds1`..`ds4`) on each decoder stage, whose logits
    # (at 1/16 .. 1/2 of the input) are sown as intermediates "deep_supervision" for the
    # training loss (train.losses.deep_supervision_loss); the output is the full-resolution
    # head's alone. Off: no such parameters (the counts are the release's).
    deep_supervision: bool = False

    def setup_checks(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if len(self.encoder_blocks) != 4 or any(int(n) < 1 for n in self.encoder_blocks):
            raise ValueError(f"model.encoder_blocks must be 4 positive layer counts, got {self.encoder_blocks!r}")
        if self.upsampling not in ("nearest", "bilinear"):
            raise ValueError(f"model.upsampling must be 'nearest' or 'bilinear' for HA-Net, got {self.upsampling!r}")
        if self.input_normalization not in ("none", "imagenet"):
            raise ValueError(f"model.input_normalization must be 'none' or 'imagenet', got {self.input_normalization!r}")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        self.setup_checks()
        dtype = DTYPES[self.dtype]
        x = x.astype(jnp.float32)
        if self.input_normalization == "imagenet":
            x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        x = x.astype(dtype)

        features, skips = DenseNet121(blocks=tuple(self.encoder_blocks), epsilon=self.encoder_epsilon,
                                     dtype=dtype, name="encoder")(x, train=train)
        for name, value in skips.items():
            self.sow("intermediates", name, value)
        self.sow("intermediates", "features", features)

        if self.variant == "baseline":
            x = features
        else:
            x = conv_block(
                features, BOTTLENECK_FILTERS, train=train, order=self.conv_order, dtype=dtype,
                conv_name="bottleneck_conv", bn_name="bottleneck_bn",
            )
            self.sow("intermediates", "bottleneck", x)
        if self.variant == "full":
            x = TransformerAttentionModule(
                merge=self.tam_merge, sdpa_learned_projections=self.sdpa_learned_projections,
                dropout_rate=self.dropout_rate, dtype=dtype, name="tam",
            )(x, train=train)

        use_sfeb = self.variant in ("full", "no_tam")
        for i, (skip_name, filters) in enumerate(DECODER_STAGES, start=1):
            x = DecoderStage(
                filters, use_sfeb, self.upsampling, self.conv_order, dtype=dtype, name=f"dec{i}"
            )(x, skips[skip_name], train=train)
            if self.deep_supervision:  # coarsest first; float32 like the output
                aux = Conv(1, 1, dtype=dtype, name=f"ds{i}")(x).astype(jnp.float32)
                self.sow("intermediates", "deep_supervision", aux)
        logits = Head(self.upsampling, self.conv_order, dtype=dtype, name="head")(x, train=train)
        return logits.astype(jnp.float32)
