"""hanet-jax: HA-Net (hybrid-attention breast-ultrasound segmentation) in JAX/Flax."""

__version__ = "0.1.0"
