"""Spatial Feature Enhancement Block, as released."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.models.layers import Conv, batch_norm


class SFEB(nn.Module):
    """SFEB on I (B, H, W, C):

        F   = ReLU(BN(Conv3x3_same(C)(I)))                       (`conv`, `bn`)
        P   = concat(GlobalMax(F), GlobalAvg(F))                 (B, 1, 1, 2C)
        Fc  = ReLU(BN(Conv3x3_same(C)(P)))                       (`ctx_conv`, `ctx_bn`)
        Fcc = sigmoid(BN(Conv1x1(C)(GlobalAvg(I))))              (`gate_conv`, `gate_bn`)
        out = I + Fc * Fcc

    Release quirks kept: the 3x3 conv on the 1x1 map P keeps a full 3x3 kernel although only its
    centre tap sees data. Convs use glorot_uniform with bias; BN eps 1e-3.
    The spec writes the first conv without "same", but only `same` padding reproduces the
    release's measured conv MAC count (7.93 G; `valid` gives 7.77 G), so `same` it is.
    """

    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c = x.shape[-1]
        conv = lambda k, pad, name: Conv(c, k, padding=pad, dtype=self.dtype, name=name)
        bn = lambda name: batch_norm(name, train=train, dtype=self.dtype)
        f = nn.relu(bn("bn")(conv(3, "SAME", "conv")(x)))
        pooled = jnp.concatenate(
            [jnp.max(f, axis=(1, 2), keepdims=True), jnp.mean(f, axis=(1, 2), keepdims=True)], axis=-1
        )
        fc = nn.relu(bn("ctx_bn")(conv(3, "SAME", "ctx_conv")(pooled)))
        gate = jax.nn.sigmoid(bn("gate_bn")(conv(1, "SAME", "gate_conv")(jnp.mean(x, axis=(1, 2), keepdims=True))))
        return x + fc * gate
