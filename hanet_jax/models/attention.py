"""The Transformer Attention Module (TAM): global spatial attention, position encoding, SDPA.

All three follow the released notebook, quirks included (see `shared/spec/keras-original.md`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hanet_jax.models.layers import Conv, he_normal, keras_uniform


class GlobalSpatialAttention(nn.Module):
    """GSA on E (B, H, W, C), with N = H*W:

        q = reshape(proj_query(E), [B, N, C/8])
        k = reshape(proj_key(E),   [B, C/8, N])
        A = softmax(q @ k, axis=-1)                       (B, N, N)
        v = reshape(proj_value(E), [B, C, N])
        G = reshape((v @ A) @ W, [B, H, W, C]) + E

    Release quirks kept: every reshape is a *raw* reshape of the NHWC buffer (k and v are
    not transposes), and W is a learned (N, N) matrix, so the module is tied to one grid size.
    The projections are 1x1 convs with bias and he_normal init; W ~ N(0, 0.05).
    """

    dtype: Any = None

    @nn.compact
    def __call__(self, e: jax.Array) -> jax.Array:
        b, h, w, c = e.shape
        n = h * w
        proj = lambda feats, name: Conv(feats, 1, kernel_init=he_normal, dtype=self.dtype, name=name)(e)
        q = proj(c // 8, "proj_query").reshape(b, n, c // 8)
        k = proj(c // 8, "proj_key").reshape(b, c // 8, n)
        v = proj(c, "proj_value").reshape(b, c, n)
        attn = jax.nn.softmax(q @ k, axis=-1)
        weight = self.param("W", nn.initializers.normal(0.05), (n, n)).astype(v.dtype)
        return ((v @ attn) @ weight).reshape(b, h, w, c) + e


class PositionEncoding(nn.Module):
    """Learned 2-D position table: pe[h, w] = concat(h_emb[h], w_emb[w]), C = 2 * out_dim.

    Two `Embedding` tables sized from the bottleneck grid (8 x 128 each at 256x256 input),
    uniform(-0.05, 0.05) init as Keras. Returns (1, H, W, C), broadcast over the batch.
    """

    out_dim: int

    @nn.compact
    def __call__(self, height: int, width: int) -> jax.Array:
        init = keras_uniform(0.05)
        rows = nn.Embed(height, self.out_dim, embedding_init=init, name="h_embedding_layer")(jnp.arange(height))
        cols = nn.Embed(width, self.out_dim, embedding_init=init, name="w_embedding_layer")(jnp.arange(width))
        pe = jnp.concatenate(
            [
                jnp.broadcast_to(rows[:, None, :], (height, width, self.out_dim)),
                jnp.broadcast_to(cols[None, :, :], (height, width, self.out_dim)),
            ],
            axis=-1,
        )
        return pe[None]


class ScaledDotProductAttention(nn.Module):
    """Self-attention over the N = H*W bottleneck positions of S0 (B, H, W, C):

        X = reshape(S0, [B, N, C]);  Q = K = V = X   (the release has no learned projections)
        S = reshape(dropout(softmax(Q K^T / sqrt(C))) @ V, [B, H, W, C])

    Dropout (rate 0.1) acts on the attention weights in training only.
    `learned_projections=True` is the paper's variant with C x C matrices W_q, W_k, W_v.
    """

    dropout_rate: float = 0.1
    learned_projections: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, s0: jax.Array, *, train: bool) -> jax.Array:
        b, h, w, c = s0.shape
        x = s0.reshape(b, h * w, c)
        if self.learned_projections:
            dense = lambda name: nn.Dense(c, use_bias=False, dtype=self.dtype, name=name)(x)
            q, k, v = dense("w_q"), dense("w_k"), dense("w_v")
        else:
            q = k = v = x
        scores = (q @ jnp.swapaxes(k, 1, 2)) / jnp.sqrt(jnp.asarray(c, x.dtype))
        attn = jax.nn.softmax(scores, axis=-1)
        attn = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(attn)
        return (attn @ v).reshape(b, h, w, c)


class TransformerAttentionModule(nn.Module):
    """TAM(E) = GSA(E) + SDPA(E + PE): a *sum* in the release (the paper says concatenation).

    `merge="concat"` is the paper's variant: concat([G, S, E + pe]) with 3C channels.
    Intermediates `gsa_out`, `sdpa_out` and `tam_out` are sown for parity checks.
    """

    merge: str = "sum"
    sdpa_learned_projections: bool = False
    dropout_rate: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, e: jax.Array, *, train: bool) -> jax.Array:
        _, h, w, c = e.shape
        g = GlobalSpatialAttention(dtype=self.dtype, name="gsa")(e)
        pe = PositionEncoding(c // 2, name="position_encoding")(h, w)
        s0 = e + pe.astype(e.dtype)
        s = ScaledDotProductAttention(
            self.dropout_rate, self.sdpa_learned_projections, dtype=self.dtype, name="sdpa"
        )(s0, train=train)
        if self.merge == "sum":
            t = g + s
        elif self.merge == "concat":
            t = jnp.concatenate([g, s, s0], axis=-1)
        else:
            raise ValueError(f"model.tam_merge must be 'sum' or 'concat', got {self.merge!r}")
        self.sow("intermediates", "gsa_out", g)
        self.sow("intermediates", "sdpa_out", s)
        self.sow("intermediates", "tam_out", t)
        return t
