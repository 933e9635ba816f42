"""The CPU conv weight gradients in our handler (hanet_jax/ops/cpu/conv.py): the same
gradients as XLA's, on one device and split over two, used by `layers.Conv` only where they apply,
and a clean fall-back where the handler cannot be built."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import run_python

from hanet_jax.models import layers
from hanet_jax import ops
from hanet_jax.ops.cpu import settings
from hanet_jax.ops.cpu import conv as blas_conv

needs_handler = pytest.mark.skipif(not blas_conv.available(), reason="no C++ compiler / scipy OpenBLAS")


def _grads(module, x, handlers: bool):
    with settings.using(handlers=handlers):
        variables = module.init(jax.random.key(0), x)
        loss = lambda v, x: jnp.sum(module.apply(v, x) ** 2)  # noqa: E731
        jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(variables, x))
        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
    return grads, (blas_conv._TARGET in jaxpr) or (blas_conv._TARGET_1X1 in jaxpr)


@needs_handler
@pytest.mark.parametrize("shape,features", [((2, 9, 7, 5), 4), ((3, 16, 16, 12), 8), ((1, 4, 4, 1), 3),
                                            ((2, 9, 7, 16), 32), ((2, 5, 6, 12), 32),
                                            # the handler's loop: its tiles at 16, 32, 48 and 64 outputs
                                            ((2, 9, 7, 16), 16), ((1, 7, 9, 32), 48), ((2, 6, 5, 8), 64)])
def test_conv_gradients_match_xla(shape, features, kernel_size=3):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, np.float32))
    conv = layers.Conv(features, kernel_size=kernel_size)
    (g_blas, dx_blas), used = _grads(conv, x, True)
    (g_xla, dx_xla), used_off = _grads(conv, x, False)
    assert used and not used_off
    # These maps are odd or their widths not multiples of 16: the input gradient stays XLA's
    # (Winograd's, where it applies, is tested in test_winograd.py).
    np.testing.assert_array_equal(dx_blas, dx_xla)
    for name in ("kernel", "bias"):
        a, b = g_blas["params"][name], g_xla["params"][name]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@needs_handler
@pytest.mark.parametrize("shape,features", [((2, 9, 7, 16), 16), ((1, 7, 9, 32), 48), ((2, 6, 5, 8), 64),
                                            ((2, 5, 6, 12), 32)])  # the last: GEMM on AVX-512
def test_1x1_conv_gradients_match_xla(shape, features):
    test_conv_gradients_match_xla(shape, features, kernel_size=1)


@needs_handler
def test_only_3x3_stride1_same_float32_use_it():
    x = jnp.ones((1, 8, 8, 4))
    k3 = jnp.ones((3, 3, 4, 2))
    assert blas_conv.applies(x, k3, 1, "SAME")
    assert not blas_conv.applies(x, k3, 2, "SAME")
    assert not blas_conv.applies(x, k3, 1, "VALID")
    assert not blas_conv.applies(x, jnp.ones((7, 7, 4, 2)), 1, "SAME")
    assert not blas_conv.applies(x.astype(jnp.bfloat16), k3.astype(jnp.bfloat16), 1, "SAME")
    # 1x1: widths the loop tiles, float32 (the head's single output stays the einsum's)
    assert blas_conv.applies_1x1(x, jnp.ones((1, 1, 4, 32)))
    assert not blas_conv.applies_1x1(x, jnp.ones((1, 1, 4, 1)))
    assert not blas_conv.applies_1x1(x.astype(jnp.bfloat16), jnp.ones((1, 1, 4, 32), jnp.bfloat16))


SPLIT = """
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from hanet_jax.ops.cpu import conv as blas_conv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 10, 6, 3), np.float32)
    k = rng.standard_normal((3, 3, 3, 5), np.float32)
    grad = lambda conv: jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=1))
    ref = np.asarray(grad(blas_conv._xla_conv)(x, k))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    got = grad(blas_conv.conv3x3)(xs, k)
    k1 = rng.standard_normal((3, 16), np.float32)  # and the 1x1 conv's
    ref1 = np.asarray(grad(blas_conv._einsum_1x1)(x, k1))
    got1 = grad(blas_conv.conv1x1)(xs, k1)
    rel = lambda a, b: float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())
    print("devices", len(jax.devices()), "available", blas_conv.available(),
          "rel", max(rel(got, ref), rel(got1, ref1)))
"""


@needs_handler
def test_split_over_two_devices_sums_the_shards():
    done = run_python(SPLIT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    assert words[1] == "2" and words[3] == "True"
    assert float(words[5]) < 1e-5


TILES = """
    import os, numpy as np, jax, jax.numpy as jnp
    from hanet_jax.ops.cpu import build
    from hanet_jax.ops.cpu import conv as blas_conv
    rng = np.random.default_rng(0)
    for march in ("x86-64-v3", "x86-64"):  # AVX2's tiles, and SSE's
        os.environ[build.MARCH_ENV] = march
        target = "tiles_" + march
        build.load_handlers(blas_conv._SOURCE, {target: "WeightGrad"})
        worst = 0.0
        for c, f in [(16, 16), (32, 48), (8, 64), (12, 32), (4, 8)]:  # every tile, and the GEMMs
            x = rng.standard_normal((2, 7, 9, c), np.float32)
            dy = rng.standard_normal((2, 7, 9, f), np.float32)
            ref = jax.vjp(lambda k: blas_conv._xla_conv(x, k), jnp.zeros((3, 3, c, f)))[1](dy)[0]
            out = jax.ShapeDtypeStruct((3, 3, c, f), np.float32)
            got = jax.ffi.ffi_call(target, out)(x, dy, loop=np.int64(2))
            worst = max(worst, float(jnp.max(jnp.abs(got - ref)) / jnp.max(jnp.abs(ref))))
        print(march, worst)
"""


@needs_handler
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 targets")
def test_loop_tiles_of_other_targets_match_xla(tmp_path):
    done = run_python(TILES, HANET_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    worst = dict(line.split() for line in done.stdout.splitlines())
    assert set(worst) == {"x86-64-v3", "x86-64"}
    assert all(float(v) < 1e-5 for v in worst.values()), worst
    assert len(list(tmp_path.glob("ffi/*/*.so"))) == 2  # one build per target


def test_without_a_compiler_falls_back_to_xla(tmp_path):
    done = run_python(SPLIT, CXX=str(tmp_path / "no-such-compiler"), HANET_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    assert words[3] == "False" and float(words[5]) == 0.0
    assert "fall back to XLA's" in done.stderr and "no-such-compiler" in done.stderr


@needs_handler
def test_disabled_context_traces_xla_gradient():
    # bench.py counts FLOPs on such a trace: XLA's cost analysis cannot see into the custom call.
    x, k = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 2))
    module = layers.Conv(2, kernel_size=3)
    variables = module.init(jax.random.key(0), x)
    loss = lambda v: jnp.sum(module.apply(v, x) ** 2)
    traced = lambda: str(jax.make_jaxpr(jax.grad(loss))(variables))
    with settings.disabled():
        assert not blas_conv.applies(x, k, 1, "SAME")
        assert blas_conv._TARGET not in traced()
    assert blas_conv.applies(x, k, 1, "SAME")
    assert blas_conv._TARGET in traced()


def test_3x3_on_a_1x1_map_is_its_centre_tap():
    # SFEB's pooled context: layers.Conv multiplies by the centre tap alone (the others meet padding).
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 1, 1, 8), np.float32))
    conv = layers.Conv(5, kernel_size=3)
    variables = conv.init(jax.random.key(0), x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    assert "conv_general_dilated" not in str(jax.make_jaxpr(conv.apply)(variables, x))
    want = blas_conv._xla_conv(x, kernel) + bias
    np.testing.assert_allclose(conv.apply(variables, x), want, rtol=1e-6, atol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(jnp.sin(conv.apply(v, x))))(variables)["params"]["kernel"]
    want_grad = jax.grad(lambda k: jnp.sum(jnp.sin(blas_conv._xla_conv(x, k) + bias)))(kernel)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-6)
    assert not np.any(np.asarray(grad)[[0, 0, 2, 2], [0, 2, 0, 2]])  # corners: zero gradient


def test_conv_of_upsampled_map_computed_on_the_small_map():
    # The head's conv: the 3x3 conv of a nearest 2x upsampling, as one conv of the small map to
    # the four output phases (ops/cpu/subpixel.py). Same values and gradients as upsampling.
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 8, 12, 16), np.float32))
    conv = layers.Conv(16, kernel_size=3)
    variables = conv.init(jax.random.key(0), x, "nearest")
    assert blas_conv.active() and ops.subpixel_applies(
        x, variables["params"]["kernel"], "nearest")
    jaxpr = str(jax.make_jaxpr(lambda v: conv.apply(v, x, "nearest"))(variables))
    assert "hanet_winograd_conv3x3" in jaxpr or "custom_partitioning" in jaxpr

    def upsampled_first(v):
        k, b = v["params"]["kernel"], v["params"]["bias"]
        return blas_conv._xla_conv(layers.upsample2x(x), k) + b

    got, want = conv.apply(variables, x, "nearest"), upsampled_first(variables)
    assert got.shape == (2, 16, 24, 16)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(want))))
    loss = lambda f: lambda v, x: jnp.sum(jnp.sin(f(v, x)))  # noqa: E731
    g = jax.grad(loss(lambda v, x: conv.apply(v, x, "nearest")), argnums=(0, 1))(variables, x)
    w = jax.grad(loss(lambda v, x: blas_conv._xla_conv(layers.upsample2x(x), v["params"]["kernel"])
                      + v["params"]["bias"]), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    # Wider kernels, or bilinear upsampling, take the upsampled map.
    assert not ops.subpixel_applies(x, jnp.zeros((3, 3, 16, 64)), "nearest")
    assert not ops.subpixel_applies(x, variables["params"]["kernel"], "bilinear")
