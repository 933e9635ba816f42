"""On the CPU, the 3x3 SAME conv of a nearest 2x upsampling computed on the small map (round 16).

Each of the four output phases is a 3x3 conv of x whose kernel sums the taps that fall on the same
pixel of x, so one conv of x to 4F channels, then depth-to-space. The same multiplications as on
the large map, from a quarter of the input (the upsampled map is never written): 2.1x faster for
the head's 32->16 conv at 128x128 (round 16, experiments/perf/subpixel_shapes.py). Equal up to
the rounding of the summed taps. Only where the kernel is small: the handler transforms the 4x
wider kernel on every call, which cost more than it saved at 64->64 and up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.ops.cpu import conv, winograd

# [output phase, tap offset -1/0/+1 on the small map, kernel row]: which of a 3x3 kernel's rows
# meet which row of the small map, for the even (0) and odd (1) rows of its nearest 2x upsampling.
_PHASE_TAPS = np.zeros((2, 3, 3), np.float32)
_PHASE_TAPS[0, 0, 0] = _PHASE_TAPS[0, 1, 1] = _PHASE_TAPS[0, 1, 2] = 1
_PHASE_TAPS[1, 1, 0] = _PHASE_TAPS[1, 1, 1] = _PHASE_TAPS[1, 2, 2] = 1
MAX_WEIGHTS = 32 * 16  # C x F: the head's conv


def applies(x: jax.Array, kernel: jax.Array) -> bool:
    """Whether `subpixel_conv3x3` should compute the 3x3 SAME conv of upsample2x(x) (nearest)."""
    c, f = kernel.shape[2:]
    return (kernel.shape[:2] == (3, 3) and c * f <= MAX_WEIGHTS
            and conv.applies(x, kernel, 1, "SAME")
            and winograd.tile_size(*x.shape[1:], 4 * f) is not None)


def subpixel_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 3x3 SAME conv of `upsample2x(x)` (nearest), computed on x."""
    c, f = kernel.shape[2:]
    k4 = jnp.einsum("apk,bql,klcf->pqcabf", _PHASE_TAPS, _PHASE_TAPS, kernel).reshape(3, 3, c, 4 * f)
    y = conv.conv3x3(x, k4.astype(kernel.dtype))
    b, h, w, _ = y.shape
    return y.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, f)
