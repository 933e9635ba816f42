"""Flax Linen modules: the DenseNet-121 encoder, TAM attention, SFEB and the assembled HA-Net."""
