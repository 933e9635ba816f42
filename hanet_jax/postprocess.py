"""Post-processing of a binarised prediction, applied under the "fixed" protocol only.

- "none": the mask as thresholded.
- "largest_component": keep the largest 8-connected foreground component (nnU-Net's
  "remove all but the largest component"). One lesion per BUSI/UDIAT image makes it a fair prior;
  like nnU-Net, whether to use it is decided on validation data (`eval.py --postprocess auto`
  with `--threshold_from_split val`), never on the scored images.

The paper's oracle protocol stays the release's: no post-processing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

POSTPROCESS = ("none", "largest_component")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """`mask` with every foreground pixel outside its largest 8-connected component cleared;
    ties go to the component found first in row-major order. An empty mask stays empty."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def apply(mask: np.ndarray, name: str) -> np.ndarray:
    """The mask after post-processing `name` (one of POSTPROCESS)."""
    if name == "none":
        return np.asarray(mask, dtype=bool)
    if name == "largest_component":
        return largest_component(mask)
    raise ValueError(f"unknown post-processing {name!r}; choose one of {POSTPROCESS}")
