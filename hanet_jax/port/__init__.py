"""Foreign checkpoints (Keras, torchvision) -> Flax variables -> Orbax."""
