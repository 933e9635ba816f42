"""A 3x3, stride-1, SAME convolution as Winograd F(2x2, 3x3) (Lavin & Gray, 2016): an issue-7
experiment (docs/performance.md, round 6), not used by the model: slower on XLA:CPU.

Each 2x2 output tile comes from a 4x4 input tile with 16 multiplications per (C_in, C_out)
pair instead of 36: an elementwise input transform, 16 independent (tiles x C_in) @
(C_in x C_out) matmuls, an elementwise output transform. Written in jnp, its autodiff backward
is made of GEMMs too; the weight gradient becomes 16 (C_in x tiles) @ (tiles x C_out) matmuls.
The result equals the direct convolution in real arithmetic; in float32 it differs by rounding
(~1e-6 of the output's scale, printed by conv3x3_swap.py and ab_conv_swap.py, --swap winograd).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Y = A^T [(G g G^T) * (B^T d B)] A; B^T and A^T are applied as slices and sums below.
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def _input_transform(x: jax.Array, axis: int, tiles: int) -> list[jax.Array]:
    """B^T along `axis` of the padded input: four stride-2 views of it, combined."""
    r = [jax.lax.slice_in_dim(x, k, k + 2 * tiles - 1, stride=2, axis=axis) for k in range(4)]
    return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]


def _output_transform(m: jax.Array, axis: int) -> jax.Array:
    """A^T along `axis` (size 4): the two output rows (or columns) of each tile."""
    m0, m1, m2, m3 = (jax.lax.index_in_dim(m, k, axis, keepdims=False) for k in range(4))
    return jnp.stack([m0 + m1 + m2, m1 - m2 - m3], axis=axis)


def supported(x_shape, kernel_shape, strides: int, padding: str) -> bool:
    """Whether `conv3x3` computes this convolution: 3x3, stride 1, SAME, even height and width."""
    return (tuple(kernel_shape[:2]) == (3, 3) and strides == 1 and padding == "SAME"
            and x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """NHWC `x` (even H and W) convolved with HWIO `kernel` (3x3), stride 1, SAME padding."""
    b, h, w, _ = x.shape
    th, tw = h // 2, w // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = _input_transform(xp, 1, th)                                     # 4 x (b, th, w+2, c)
    v = jnp.stack([jnp.stack(_input_transform(r, 2, tw)) for r in rows])   # (4, 4, b, th, tw, c)
    g = jnp.asarray(_G, kernel.dtype)
    u = jnp.einsum("ik,klcf,jl->ijcf", g, kernel, g)                       # (4, 4, c, f)
    m = jnp.einsum("ijbpqc,ijcf->ijbpqf", v, u)
    y = _output_transform(_output_transform(m, 0), 1)                     # (2, 2, b, th, tw, f)
    return jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(b, h, w, kernel.shape[-1])
