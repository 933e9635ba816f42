"""Online augmentation on the device, inside the jitted train step.

The host feeds uint8 batches (``data.pipeline``: gather, shuffle, slice, batch, prefetch) with each
example's dataset index and epoch; ``device_batch`` turns them into the float batch the model
sees, augmenting training batches here, on the accelerator, where the host would otherwise starve
it (the tf.data augmentation this replaces fed about 94 images/s at 256x256).

Randomness: example ``i`` of epoch ``e`` draws from ``fold_in(fold_in(key(seed), e), i)``, a key
of its own that depends on nothing else. Every transform is per example and elementwise, or a
reduction done in exact integer arithmetic (the contrast's mean), so an augmented example is
bit-identical whatever the batch it lands in, the devices the batch is sharded over and the
number of processes (tests/test_augment.py checks 1 and 4 devices).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Online augmentation, each part switchable. The HA-Net release used horizontal flips only."""
    hflip: bool = True
    vflip: bool = False
    affine: bool = False
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.05  # fraction of the image side
    brightness_contrast: bool = False
    max_brightness: float = 0.1  # added to [0, 1] intensities
    contrast_range: tuple[float, float] = (0.8, 1.2)
    speckle: bool = False
    speckle_std: float = 0.1  # multiplicative noise: image * (1 + std * N(0, 1))

    @classmethod
    def all_on(cls, **overrides) -> "AugmentConfig":
        """Every augmentation enabled (benchmarks, tests)."""
        return cls(**{"hflip": True, "vflip": True, "affine": True, "brightness_contrast": True,
                      "speckle": True, **overrides})

    @property
    def any(self) -> bool:
        return self.hflip or self.vflip or self.affine or self.brightness_contrast or self.speckle


def example_keys(seed: int, epoch: jax.Array, index: jax.Array) -> jax.Array:
    """One key per example: fold_in(fold_in(key(seed), epoch), dataset index), vectorised."""
    base = jax.random.key(seed)
    return jax.vmap(lambda e, i: jax.random.fold_in(jax.random.fold_in(base, e), i))(
        epoch.astype(jnp.uint32), index.astype(jnp.uint32))


def _affine_coordinates(key: jax.Array, height: int, width: int, config: AugmentConfig
                        ) -> jax.Array:
    """Input (row, col) of every output pixel under a random rotation/scale/shift about the
    centre: input = R(-angle)/scale @ (output - centre - shift) + centre."""
    u = jax.random.uniform(key, (4,), minval=-1.0, maxval=1.0)
    angle = u[0] * (config.max_rotate_deg * math.pi / 180.0)
    low, high = config.scale_range
    scale = low + (u[1] + 1.0) * 0.5 * (high - low)
    shift_x, shift_y = u[2] * config.max_shift * width, u[3] * config.max_shift * height
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
    dx, dy = x - cx - shift_x, y - cy - shift_y
    return jnp.stack([-sin * dx + cos * dy + cy, cos * dx + sin * dy + cx])


def _warp(image: jax.Array, coordinates: jax.Array, order: int) -> jax.Array:
    """(H, W, C) sampled at `coordinates` (2, H, W); outside the image: 0 (order 1: bilinear,
    0: nearest)."""
    def channel(c):
        return ndimage.map_coordinates(c, list(coordinates), order=order, mode="constant",
                                       cval=0.0)
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)


def _exact_mean(image: jax.Array) -> jax.Array:
    """The mean of a [0, 1] image from an integer sum of its values in 1/255 steps: exact, so
    independent of how XLA orders a float reduction on any device (uint32 holds the sum of
    up to 16.8 M values at 255)."""
    levels = jnp.round(image * 255.0).astype(jnp.uint32)
    return jnp.sum(levels, dtype=jnp.uint32).astype(jnp.float32) / (255.0 * image.size)


def augment_example(image: jax.Array, mask: jax.Array, key: jax.Array, config: AugmentConfig
                    ) -> tuple[jax.Array, jax.Array]:
    """Augments one float image (H, W, 3) in [0, 1] and its 0/1 mask (H, W, 1) with one key.

    Geometric parts move image and mask together (nearest neighbour for the mask, so it stays
    0/1); intensity parts touch the image only. The six sub-keys are fixed per part, so
    switching one part off leaves the others' draws unchanged.
    """
    keys = jax.random.split(key, 6)
    if config.hflip:
        flip = jax.random.uniform(keys[0]) < 0.5
        image, mask = (jnp.where(flip, a[:, ::-1], a) for a in (image, mask))
    if config.vflip:
        flip = jax.random.uniform(keys[1]) < 0.5
        image, mask = (jnp.where(flip, a[::-1], a) for a in (image, mask))
    if config.affine:
        coordinates = _affine_coordinates(keys[2], image.shape[0], image.shape[1], config)
        image, mask = _warp(image, coordinates, 1), _warp(mask, coordinates, 0)
    if config.brightness_contrast:
        low, high = config.contrast_range
        contrast = jax.random.uniform(keys[3], minval=low, maxval=high)
        brightness = jax.random.uniform(keys[4], minval=-config.max_brightness,
                                        maxval=config.max_brightness)
        mean = _exact_mean(image)
        image = (image - mean) * contrast + mean + brightness
    if config.speckle:
        # One noise field for all channels: ultrasound is grey, replicated to RGB.
        noise = jax.random.normal(keys[5], image.shape[:2] + (1,))
        image = image * (1.0 + config.speckle_std * noise)
    return jnp.clip(image, 0.0, 1.0), mask


def device_batch(batch: dict, *, augment: AugmentConfig | None = None, seed: int = 0) -> dict:
    """The model's float batch from the host's: ``image`` uint8 -> float32 in [0, 1], ``mask``
    -> float32 0/1 (float inputs pass through), then, when ``augment`` has any part on, each
    example augmented with its own key from (``seed``, ``batch["epoch"]``, ``batch["index"]``).
    """
    image, mask = batch["image"], batch["mask"]
    if image.dtype == jnp.uint8:
        image = image.astype(jnp.float32) / 255.0
    mask = mask.astype(jnp.float32)
    if augment is not None and augment.any:
        if "index" not in batch or "epoch" not in batch:
            raise KeyError("augmentation on the device needs the batch's 'index' and 'epoch' "
                           "(data.pipeline's training batches carry them)")
        keys = example_keys(seed, batch["epoch"], batch["index"])
        image, mask = jax.vmap(lambda i, m, k: augment_example(i, m, k, augment))(
            image, mask, keys)
    return {**batch, "image": image, "mask": mask}
