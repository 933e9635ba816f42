"""Tried and NOT adopted (docs/performance.md): hand-written gradients for train-mode BatchNorm
and for the stem's 3x3/2 max-pool. Each is faster in isolation on XLA:CPU (BN grad 44 -> 30 ms at
8x64x64x192; max-pool grad 126 -> 54 ms at 8x128x128x64) but the whole bench train step did not
get faster (experiments/perf/ab_train_step.py: 0.96x-1.01x, within noise); in the full graph XLA
fuses the max-pool backward with its neighbours into one 360 ms fusion. Kept here, with the exact
same variables as `flax.linen.BatchNorm`, so the experiment can be rerun.

`install()` swaps them into the model code (process-wide; for experiments only).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _pool_taps(hp: int, wp: int, k: int, s: int):
    """Output size and the (row, col) offsets of the k*k window taps of a VALID k x k / s pool."""
    ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
    return ho, wo, [(i, j) for i in range(k) for j in range(k)]


@jax.custom_vjp
def _max_pool_3x3s2(x: jax.Array) -> jax.Array:
    """VALID 3x3 / 2 max-pool; the same values and gradient as `nn.max_pool`, for XLA:CPU.

    XLA:CPU runs the gradient of `reduce_window(max)` (`select_and_scatter`) about 3.5x slower
    than this explicit form (126 ms vs 54 ms for the gradient at 8x128x128x64, in isolation).
    The forward is still `reduce_window`; the backward routes each output's gradient to the
    *first* maximal tap in row-major window order, which is exactly what `select_and_scatter`
    (select = `>=`) does, ties included; only the order in which overlapping windows add into one
    input differs, so gradients agree to the last bit or two (max abs diff ~5e-7 on N(0, 1) data).
    """
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def _max_pool_3x3s2_fwd(x):
    out = _max_pool_3x3s2(x)
    return out, (x, out)


def _max_pool_3x3s2_bwd(res, g):
    x, out = res
    b, hp, wp, c = x.shape
    ho, wo, taps = _pool_taps(hp, wp, 3, 2)
    claimed = jnp.zeros(out.shape, bool)
    dx = jnp.zeros_like(x)
    zero = jnp.zeros((), x.dtype)
    for i, j in taps:
        tap = jax.lax.slice(x, (0, i, j, 0), (b, i + 2 * (ho - 1) + 1, j + 2 * (wo - 1) + 1, c), (1, 2, 2, 1))
        hit = (tap == out) & ~claimed
        claimed = claimed | hit
        contrib = jnp.where(hit, g, zero)
        # The transpose of the strided slice: interior padding puts each value back in place.
        dx = dx + jax.lax.pad(contrib, zero, ((0, 0, 0), (i, hp - i - 2 * (ho - 1) - 1, 1),
                                              (j, wp - j - 2 * (wo - 1) - 1, 1), (0, 0, 0)))
    return (dx,)


_max_pool_3x3s2.defvjp(_max_pool_3x3s2_fwd, _max_pool_3x3s2_bwd)


def max_pool_3x3s2(x: jax.Array) -> jax.Array:
    """VALID 3x3 / 2 max-pool. On the CPU backend its gradient is the explicit one above;
    elsewhere (GPU/TPU, whose `select_and_scatter` is fast) plain `nn.max_pool`."""
    if jax.default_backend() == "cpu":
        return _max_pool_3x3s2(x)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def relu_pad_max_pool_3x3s2(x: jax.Array) -> jax.Array:
    """The stem's ReLU, ZeroPadding2D(1) and pool (`hanet_jax.ops.relu_pad_max_pool_3x3_s2`),
    the pool with the explicit gradient above."""
    return _max_pool_3x3s2(jnp.pad(nn.relu(x), ((0, 0), (1, 1), (1, 1), (0, 0))))


def _bn_stats(x):
    """Per-channel batch mean and (biased) variance, exactly as flax's `_compute_stats`."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(0.0, jnp.mean(jax.lax.square(x), axes) - jax.lax.square(mean))
    return mean, var


def _bn_apply(x, mean, var, scale, bias, epsilon):
    """flax's `_normalize`, operation for operation: (x - mean) * (rsqrt(var + eps) * scale) + bias."""
    mul = jax.lax.rsqrt(var + epsilon) * scale
    return (x - mean) * mul + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bn_train(x, scale, bias, epsilon):
    """Train-mode BatchNorm over all but the last axis: `(y, batch_mean, batch_var)`.

    The forward is flax's arithmetic. The backward is the closed form
        dx = scale * r * (dy - sum(dy) / n - (x - mean) * r^2 * sum(dy * (x - mean)) / n)
    (r = rsqrt(var + eps)), plus the (usually zero) cotangents of the returned statistics. XLA:CPU
    runs autodiff's version of this as many unfused passes; this one is one two-output reduction
    and one elementwise pass: ~1.5x faster at 8x64x64x192 in isolation (44 -> 30 ms).
    """
    mean, var = _bn_stats(x)
    return _bn_apply(x, mean, var, scale, bias, epsilon), mean, var


def _bn_train_fwd(x, scale, bias, epsilon):
    mean, var = _bn_stats(x)
    return (_bn_apply(x, mean, var, scale, bias, epsilon), mean, var), (x, mean, var, scale)


def _bn_train_bwd(epsilon, res, cotangents):
    x, mean, var, scale = res
    gy, gmean, gvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    r = jax.lax.rsqrt(var + epsilon)
    xc = x - mean
    db = jnp.sum(gy, axes)
    dxc = jnp.sum(gy * xc, axes)  # d scale = dxc * r
    # d var / dx = 2 (x - mean) / n also through the clip at 0 (flax's autodiff agrees except
    # when var is exactly 0, where the statistics' cotangent is zero in every use here).
    dx = (scale * r) * (gy - db / n - xc * (dxc * r * r / n)) + gmean / n + (2.0 / n) * gvar * xc
    return dx, dxc * r, db


bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class CpuBatchNorm(nn.BatchNorm):
    """`nn.BatchNorm` (same fields, the same variables in the same order, the same forward
    arithmetic) whose training-mode gradient is `bn_train`'s closed form. Only the settings
    HA-Net uses are supported (last-axis features, no axis_name / mask); Tried on the CPU backend only."""

    @nn.compact
    def __call__(self, x, use_running_average=None, *, mask=None):
        if mask is not None or self.axis_name is not None or self.axis != -1:
            raise NotImplementedError("CpuBatchNorm supports last-axis features only")
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        x = x.astype(jnp.float32)
        if use_running_average:
            return _bn_apply(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
        y, mean, var = bn_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


def install(bn: bool = True, maxpool: bool = True):
    """Make HA-Net use these (affects models traced afterwards, in this process)."""
    import flax.linen

    from hanet_jax.models import layers

    if bn:
        layers.nn = _Namespace(layers.nn, BatchNorm=CpuBatchNorm)
    if maxpool:
        from hanet_jax import ops

        # The stem no longer calls nn.max_pool: it asks hanet_jax.ops (a C++ handler on the CPU since round 14).
        _replaced.setdefault("relu_pad_max_pool_3x3_s2", ops.relu_pad_max_pool_3x3_s2)
        ops.relu_pad_max_pool_3x3_s2 = relu_pad_max_pool_3x3s2
    return flax.linen


_replaced = {}  # hanet_jax.ops functions that `install` swapped out, by name


def uninstall():
    from hanet_jax import ops
    from hanet_jax.models import layers

    if isinstance(layers.nn, _Namespace):
        layers.nn = layers.nn._base
    for name, fn in _replaced.items():
        setattr(ops, name, fn)
    _replaced.clear()


class _Namespace:
    """`flax.linen` with a few attributes replaced."""

    def __init__(self, base, **overrides):
        self._base, self._overrides = base, overrides

    def __getattr__(self, name):
        return self._overrides.get(name, getattr(self._base, name))
