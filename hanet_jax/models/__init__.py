"""Flax Linen modules: the DenseNet-121 encoder, TAM attention, SFEB and the assembled HA-Net."""

from hanet_jax.models.attention import TransformerAttentionModule
from hanet_jax.models.densenet import DenseNet121
from hanet_jax.models.hanet import VARIANTS, HANet, model_config, model_from_config
from hanet_jax.models.sfeb import SFEB

__all__ = ["DenseNet121", "HANet", "SFEB", "TransformerAttentionModule", "VARIANTS", "model_config",
           "model_from_config"]
