"""The stem's max-pool with our CPU forward and gradient (hanet_jax/ops/cpu/maxpool.py): the same
values and the same gradient as JAX's, ties and NaN included, on one device and split over two."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import run_python

from hanet_jax.ops.cpu import conv as blas_conv
from hanet_jax.ops.cpu import maxpool

needs_handler = pytest.mark.skipif(not (blas_conv.active() and maxpool.available()),
                                   reason="no C++ compiler / handler")


def _relu_padded(shape, seed=0):
    # As in the stem: a ReLU output (half of it exact zeros, so windows tie) padded with zeros.
    x = np.maximum(np.random.default_rng(seed).standard_normal(shape, np.float32), 0)
    x[:, :3] = 0.0  # whole windows of zeros: the first tap must win
    x[:, :, 5, :] = x[:, :, 4, :]  # equal non-zero maxima in neighbouring columns
    return jnp.pad(jnp.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))


@needs_handler
@pytest.mark.parametrize("shape", [(2, 12, 10, 5), (1, 9, 7, 16)])
def test_same_values_and_gradient_as_jax(shape):
    x = _relu_padded(shape)
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(maxpool._pool(x).shape, np.float32))
    ours, vjp_ours = jax.vjp(maxpool._pool_with_our_grad, x)
    ref, vjp_ref = jax.vjp(maxpool._pool, x)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(jax.jit(vjp_ours)(dy)[0], vjp_ref(dy)[0])
    assert "hanet_maxpool3x3s2_grad" in str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(maxpool.max_pool_3x3_s2(x))))(x))


@needs_handler
def test_forward_matches_jax_on_any_values():
    x = np.random.default_rng(3).standard_normal((2, 11, 9, 20), np.float32)  # negatives too
    x[0, 4, 4, 3] = np.nan  # XLA's max propagates NaN, whichever tap it is in
    x[1, 0, 0, 5] = np.nan
    x[1, 6, 2, :] = -np.inf
    ours = jax.jit(maxpool.max_pool_3x3_s2)(jnp.asarray(x))
    np.testing.assert_array_equal(ours, maxpool._pool(jnp.asarray(x)))
    assert np.isnan(np.asarray(ours)).sum() == 4 + 1
    assert '"hanet_maxpool3x3s2"' in jax.jit(maxpool.max_pool_3x3_s2).lower(jnp.asarray(x)).compile().as_text()


@needs_handler
@pytest.mark.parametrize("shape", [(2, 16, 12, 32), (1, 10, 6, 8)])
def test_pool_of_padded_relu_in_one_handler(shape):
    # The stem's ReLU, zero padding and pool from the BN output itself (NaN and infinities too),
    # with the gradient of the three ops.
    x = np.random.default_rng(4).standard_normal(shape, np.float32)
    x[0, 3, 4, 5 % shape[-1]] = np.nan
    x[-1, 0, 0, :] = -np.inf
    x[-1, -1, -1, 3] = np.inf
    x = jnp.asarray(x)
    ours = jax.jit(maxpool.relu_pad_max_pool_3x3_s2)(x)
    np.testing.assert_array_equal(ours, maxpool._relu_pad_pool(x))
    assert ours.shape == (shape[0], shape[1] // 2, shape[2] // 2, shape[3]) and np.isnan(np.asarray(ours)).any()
    assert '"hanet_maxpool3x3s2_of_relu"' in jax.jit(maxpool.relu_pad_max_pool_3x3_s2).lower(x).compile().as_text()
    finite = jnp.nan_to_num(x, nan=0.3, posinf=2.0, neginf=-2.0)
    grad = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(finite)  # noqa: E731
    np.testing.assert_array_equal(grad(maxpool.relu_pad_max_pool_3x3_s2), grad(maxpool._relu_pad_pool))


def test_bfloat16_keeps_the_plain_pool():
    x = jnp.ones((1, 7, 7, 2), jnp.bfloat16)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(maxpool.max_pool_3x3_s2(x).astype(jnp.float32))))(x))
    assert "hanet_maxpool3x3s2_grad" not in jaxpr


SPLIT = """
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from hanet_jax.ops.cpu import maxpool
    rng = np.random.default_rng(0)
    x = np.pad(np.maximum(rng.standard_normal((4, 10, 8, 3), np.float32), 0), ((0, 0), (1, 1), (1, 1), (0, 0)))
    loss = lambda f: jax.jit(jax.grad(lambda x: jnp.sum(f(x) ** 2)))
    ref = np.asarray(loss(maxpool._pool)(x))
    xs = jax.device_put(x, NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data")))
    got = loss(maxpool._pool_with_our_grad)(xs)
    print(len(jax.devices()), got.sharding.spec, float(np.abs(np.asarray(got) - ref).max()))
"""


@needs_handler
def test_split_over_two_devices_keeps_the_batch_sharded():
    done = run_python(SPLIT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert done.returncode == 0, done.stderr[-3000:]
    devices, spec, diff = done.stdout.split(None, 1)[0], done.stdout.split()[1:-1], done.stdout.split()[-1]
    assert devices == "2" and "data" in "".join(spec) and float(diff) == 0.0
