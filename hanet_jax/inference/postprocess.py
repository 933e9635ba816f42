"""Post-processing of a binarised prediction, applied under the "fixed" protocol only.

- "none": the mask as thresholded.
- "largest_component": keep the largest 8-connected foreground component (nnU-Net's
  "remove all but the largest component"). One lesion per BUSI/UDIAT image makes it a fair prior;
  like nnU-Net, whether to use it is decided on validation data (`eval.py --postprocess auto`
  with `--threshold_from_split val`), never on the scored images.
- "most_probable_component": keep the component holding the most probability mass (the sum of
  the predicted probabilities over its pixels). Where the model marks a large, faint false region
  next to a smaller, confident lesion, size alone keeps the wrong one; mass weighs both. Chosen on
  validation the same way.

The paper's oracle protocol stays the release's: no post-processing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hanet_jax.json_files import read_json

POSTPROCESS = ("none", "largest_component", "most_probable_component")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _keep_heaviest_component(mask: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """`mask` with every foreground pixel outside its 8-connected component of largest summed
    `weights` (None: pixel count) cleared; ties go to the component found first in row-major
    order. An empty mask stays empty. A trailing channel axis of size 1 is kept as it came."""
    mask = np.asarray(mask, dtype=bool)
    plane = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
    labels, n = ndimage.label(plane, structure=_EIGHT_CONNECTED)
    if n <= 1:
        return mask
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
    totals = np.bincount(labels.ravel(), weights=weights)[1:]
    return (labels == 1 + int(np.argmax(totals))).reshape(mask.shape)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """`mask` with every foreground pixel outside its largest 8-connected component cleared;
    ties go to the component found first in row-major order. An empty mask stays empty."""
    return _keep_heaviest_component(mask, None)


def most_probable_component(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """`mask` with every foreground pixel outside the 8-connected component of largest summed
    `prob` cleared (ties: the first in row-major order). An empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    prob = np.asarray(prob)
    if prob.shape != mask.shape:
        raise ValueError(f"mask and probabilities differ in shape: {mask.shape} vs {prob.shape}")
    return _keep_heaviest_component(mask, prob)


def apply(mask: np.ndarray, name: str, prob: np.ndarray | None = None) -> np.ndarray:
    """The mask after post-processing `name` (one of POSTPROCESS); `prob`, the probabilities
    `mask` was thresholded from, is needed by "most_probable_component"."""
    if name == "none":
        return np.asarray(mask, dtype=bool)
    if name == "largest_component":
        return largest_component(mask)
    if name == "most_probable_component":
        if prob is None:
            raise ValueError("post-processing 'most_probable_component' needs the probabilities")
        return most_probable_component(mask, prob)
    raise ValueError(f"unknown post-processing {name!r}; choose one of {POSTPROCESS}")


def binarize(prob, threshold: float) -> np.ndarray:
    """`prob >= threshold` as bool, compared in prob's dtype.

    A Python float is a weak scalar for NumPy (NEP 50), so for float32 maps a threshold of 0.7
    means float32(0.7), as it would in Keras/TF, and an oracle threshold read back from prob
    selects exactly the pixels it was chosen for.
    """
    return np.asarray(prob) >= float(threshold)


def fixed_mask(prob, threshold: float = 0.5, postprocess: str = "none") -> np.ndarray:
    """The "fixed" protocol's mask: `prob >= threshold`, then `postprocess`."""
    return apply(binarize(prob, threshold), postprocess, np.asarray(prob))


class SettingsError(Exception):
    pass


def fixed_settings(path: str) -> tuple[float, str]:
    """(threshold, post-processing) of the fixed protocol in an eval.py JSON (`predict.py
    --settings_from`; `hanet-export` records them in export.json)."""
    try:
        fixed = read_json(path)["protocols"]["fixed"]
        threshold, post = float(fixed["threshold"]), fixed.get("postprocess", "none")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SettingsError(f"--settings_from {path}: not an eval.py output with a fixed protocol "
                            f"({type(e).__name__}: {e})") from e
    if post not in POSTPROCESS or not 0.0 <= threshold <= 1.0:
        raise SettingsError(f"--settings_from {path}: fixed protocol with threshold {threshold} and "
                            f"post-processing {post!r}; expected [0, 1] and one of {POSTPROCESS}")
    return threshold, post
