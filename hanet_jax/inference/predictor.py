"""Inference on images of any size: the release's preprocessing, batched jitted forward, resize back.

Preprocessing as the release: RGB (grey replicated), divide by 255, resize to the model size
(bilinear, the same resize the training pipeline uses). Probabilities are resized back to each
image's own size bilinearly.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from hanet_jax.checkpoints.loading import Bundle
from hanet_jax.data.pipeline import resize_image


def preprocess(image: np.ndarray, image_size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (h, w, 3) in [0, 1] at the model size."""
    return resize_image(image, image_size).astype(np.float32) / 255.0


def resize_probabilities(prob: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """float (h, w) -> float32 (H, W), bilinear (PIL's float mode keeps full precision)."""
    height, width = size
    prob = np.asarray(prob, np.float32)
    if prob.shape == (height, width):
        return prob
    return np.asarray(Image.fromarray(prob, mode="F").resize((width, height), Image.BILINEAR), np.float32)


@functools.lru_cache(maxsize=16)
def _forward(model, tta: bool):
    """The jitted forward of `model` (a hashable Flax module): shared by the Predictors of equal
    models, such as an ensemble's members, so each shape compiles once."""

    def forward(variables, x):
        prob = jax.nn.sigmoid(model.apply(variables, x, train=False))
        if tta:  # average with the horizontally flipped prediction, flipped back
            flipped = jax.nn.sigmoid(model.apply(variables, x[:, :, ::-1], train=False))[:, :, ::-1]
            prob = 0.5 * (prob + flipped)
        return prob[..., 0]

    return jax.jit(forward)


class BatchedPredictor:
    """Images of any size in, probabilities at each image's size out, through a model that
    takes fixed-size batches at `image_size`: subclasses give `image_size` and `_run`."""

    batch_size: int
    image_size: tuple[int, int]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (batch_size, h, w, 3) -> probabilities (batch_size, h, w)."""
        raise NotImplementedError

    def model_size_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, h, w, 3) at the model size -> probabilities (B, h, w)."""
        n = len(batch)
        pad = (-n) % self.batch_size  # one compiled shape for every batch
        if pad:
            batch = np.concatenate([batch, np.zeros((pad, *batch.shape[1:]), batch.dtype)])
        out = [np.asarray(self._run(batch[i:i + self.batch_size])) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(out)[:n]

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 images of any sizes -> float32 probabilities, each at its image's size."""
        x = np.stack([preprocess(im, self.image_size) for im in images])
        probs = self.model_size_probabilities(x)
        return [resize_probabilities(p, im.shape[:2]) for p, im in zip(probs, images)]


class Predictor(BatchedPredictor):
    """Batched probabilities from a `Bundle` (an exported checkpoint or a training workdir)."""

    def __init__(self, bundle: Bundle, batch_size: int = 8, tta: bool = False):
        self.bundle = bundle
        self.batch_size = batch_size
        self._forward = _forward(bundle.model, bool(tta))

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.bundle.image_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(self.bundle.variables, batch)
