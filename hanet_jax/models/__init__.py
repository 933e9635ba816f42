"""Flax Linen modules: the DenseNet-121 encoder, TAM attention, SFEB, the assembled HA-Net, and the
baselines it is compared with (U-Net, Attention U-Net, UNet++); `architectures` builds any of them."""

from hanet_jax.models.architectures import ARCHITECTURES, model_config, model_from_config
from hanet_jax.models.attention import TransformerAttentionModule
from hanet_jax.models.attention_unet import AttentionUNet
from hanet_jax.models.densenet import DenseNet121
from hanet_jax.models.hanet import VARIANTS, HANet
from hanet_jax.models.sfeb import SFEB
from hanet_jax.models.unet import UNet
from hanet_jax.models.unet_plus_plus import UNetPlusPlus

__all__ = ["ARCHITECTURES", "AttentionUNet", "DenseNet121", "HANet", "SFEB",
           "TransformerAttentionModule", "UNet", "UNetPlusPlus", "VARIANTS", "model_config",
           "model_from_config"]
