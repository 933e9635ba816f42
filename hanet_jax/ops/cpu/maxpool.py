"""The stem's 3x3, stride-2, VALID max-pool, with its forward and gradient on the CPU in C++ XLA
FFI handlers of ours (`maxpool_grad.cc`; issue 7, docs/performance.md rounds 14-16). The forward
is the window's maximum, bit-identical to `flax.linen.max_pool` (NaN propagates as in XLA's
max), which XLA:CPU ran as a scalar reduce-window; the gradient routes each output's to the first maximal input of its
window, exactly as JAX's does (select-and-scatter with `ge`), which XLA:CPU runs as a
reduce-window over four index arrays and a scatter, the largest non-conv op of the train step.

`relu_pad_max_pool_3x3_s2` is the stem's ReLU, zero padding and pool in one handler (round 16).

Used where `conv.active()` (the CPU, HANET_BLAS_CONV not 0) and the input is float32;
elsewhere, or where the handler cannot be built, `max_pool_3x3_s2` is the plain pool.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.ops.cpu import conv, targets
from hanet_jax.ops.cpu.build import load_handlers
from hanet_jax.ops.cpu.partitioning import sharded_over_batch

_SOURCE = Path(__file__).with_name("maxpool_grad.cc")
_TARGET = targets.MAXPOOL3X3S2_GRAD
_FORWARD = targets.MAXPOOL3X3S2
_OF_RELU = targets.MAXPOOL3X3S2_OF_RELU


@functools.cache
def available() -> bool:
    """Whether the handler is built and registered (once per process; False also logs why)."""
    try:
        load_handlers(_SOURCE, {_TARGET: "MaxPoolGrad", _FORWARD: "MaxPool", _OF_RELU: "MaxPoolOfRelu"})
        return True
    except Exception as e:  # noqa: BLE001  (XLA's gradient is always correct)
        logging.warning("%s: the max-pool gradient falls back to XLA's (%s)", __name__, e)
        return False


def _pool(x):
    return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")


_grad, _ = sharded_over_batch(_TARGET, lambda x, dy: x.shape, "b h w c, b i j c -> b h w c",
                                         summed=False)
_forward, _ = sharded_over_batch(
    _FORWARD, lambda x: (x.shape[0], (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1, x.shape[3]),
    "b h w c -> b i j c", summed=False)

_of_relu, _ = sharded_over_batch(
    _OF_RELU, lambda x: (x.shape[0], (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1, x.shape[3]),
    "b h w c -> b i j c", summed=False)


@jax.custom_vjp
def _pool_with_our_grad(x):
    return _forward(x)


def _fwd(x):
    return _forward(x), x


def _bwd(x, dy):
    if not available():  # called directly where the handler cannot be built: XLA's gradient
        return jax.vjp(_pool, x)[1](dy)
    return (_grad(x, dy),)


_pool_with_our_grad.defvjp(_fwd, _bwd)


def applies(x: jax.Array) -> bool:
    """Whether our handlers can pool `x`: float32, the handlers on and loaded."""
    return x.dtype == np.float32 and conv.active() and available()


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")`, NHWC; where `applies`, our
    forward and gradient (a CPU lowering's: `hanet_jax.ops` chooses per platform)."""
    if applies(x):
        return _pool_with_our_grad(x)
    return _pool(x)


def _relu_pad_pool(x):
    return max_pool_3x3_s2(jnp.pad(nn.relu(x), ((0, 0), (1, 1), (1, 1), (0, 0))))


@jax.custom_vjp
def _relu_pad_pool_ours(x):
    return _of_relu(x)


def _relu_fwd(x):
    return _of_relu(x), x


def _relu_bwd(x, dy):  # recomputes the padded ReLU map, which the gradient handler reads
    return jax.vjp(_relu_pad_pool, x)[1](dy)


_relu_pad_pool_ours.defvjp(_relu_fwd, _relu_bwd)


def relu_pad_max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`max_pool_3x3_s2` of `relu(x)` zero-padded by 1 (the stem's ReLU, ZeroPadding2D(1) and
    pool). Where `applies`, one handler pools x directly, so the padded ReLU map is never
    written (round 16); the gradient is `max_pool_3x3_s2`'s."""
    if applies(x):
        return _relu_pad_pool_ours(x)
    return _relu_pad_pool(x)
