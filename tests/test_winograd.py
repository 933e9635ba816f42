"""The CPU 3x3 convs as Winograd in our handler (hanet_jax/ops/cpu/winograd.py): the same outputs
and gradients as XLA's direct conv to rounding, per-shape choice of the tile size, batch-sharded
over two devices, on the AVX2 and SSE builds too, and off where it does not apply."""

import contextlib
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import run_python

from hanet_jax.models import densenet, layers
from hanet_jax import ops
from hanet_jax.ops.cpu import settings
from hanet_jax.ops.cpu import conv as blas_conv
from hanet_jax.ops.cpu import winograd

needs_handler = pytest.mark.skipif(not blas_conv.available() or winograd._library() is None,
                                   reason="no C++ compiler / scipy OpenBLAS")

# Winograd's rounding relative to the largest value: F(2x2, 3x3) ~1e-6, F(4x4, 3x3) ~1e-5.
TOLERANCE = {2: 5e-6, 4: 5e-5}


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture
def cpu_settings():
    """`cpu_settings(**changes)`: settings.using(...) for the rest of the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(settings.using(**changes))


@pytest.fixture
def force_m(cpu_settings):
    return lambda m: cpu_settings(winograd_m=m)


def _conv_and_grads(module, variables, x):
    loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))  # noqa: E731  (dy varies per pixel)
    fn = lambda v, x: (module.apply(v, x), jax.grad(loss, argnums=(0, 1))(v, x))  # noqa: E731
    jaxpr = str(jax.make_jaxpr(fn)(variables, x))
    return jax.jit(fn)(variables, x), winograd._CONV in jaxpr


@needs_handler
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape,features,band_bytes", [
    ((2, 8, 12, 16), 32, None), ((1, 16, 8, 32), 16, None), ((3, 4, 4, 48), 64, None),
    # bands of one row group (14 or 28 tiles), across images, the last one short
    ((3, 16, 16, 16), 48, 4096), ((3, 16, 16, 48), 64, 4096)])
def test_output_and_gradients_match_xla(shape, features, band_bytes, m, force_m, cpu_settings):
    if band_bytes:
        cpu_settings(band_bytes=band_bytes)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, np.float32))
    conv = layers.Conv(features, kernel_size=3)
    variables = conv.init(jax.random.key(0), x)
    force_m(0)
    (y_ref, (g_ref, dx_ref)), used_off = _conv_and_grads(conv, variables, x)
    force_m(m)
    (y, (g, dx)), used = _conv_and_grads(conv, variables, x)
    assert used and not used_off
    assert _rel(y, y_ref) < TOLERANCE[m]
    assert _rel(dx, dx_ref) < TOLERANCE[m]  # the flipped kernel's conv
    assert _rel(g["params"]["kernel"], g_ref["params"]["kernel"]) < 1e-4  # dy from Winograd's y
    assert _rel(y, y_ref) > 0  # it really is another computation


@needs_handler
def test_tile_size_per_shape(force_m):
    assert winograd.tile_size(64, 64, 128, 32) == 4
    assert winograd.tile_size(32, 32, 256, 256) == 4
    assert winograd.tile_size(16, 16, 256, 256) == 2
    assert winograd.tile_size(8, 8, 128, 32) == 2
    assert winograd.tile_size(8, 8, 1024, 256) == 2
    assert winograd.tile_size(4, 4, 128, 32) is None     # too few tiles
    assert winograd.tile_size(1, 1, 512, 256) is None
    assert winograd.tile_size(64, 64, 12, 32) is None    # widths not a multiple of the vector
    assert winograd.tile_size(30, 30, 16, 16) == 2       # not a multiple of 4
    force_m(4)
    assert winograd.tile_size(8, 8, 1024, 256) == 4
    assert winograd.tile_size(4, 4, 128, 32) == 4
    assert winograd.tile_size(30, 30, 16, 16) is None
    force_m(0)
    assert winograd.tile_size(64, 64, 128, 32) is None


@needs_handler
def test_env_and_disabled_keep_xla(monkeypatch):
    x = jnp.ones((1, 32, 32, 16))
    conv = layers.Conv(16, kernel_size=3)
    variables = conv.init(jax.random.key(0), x)
    traced = lambda: str(jax.make_jaxpr(lambda v: conv.apply(v, x))(variables))  # noqa: E731
    assert winograd._CONV in traced()
    monkeypatch.setenv(settings.WINOGRAD_ENV, "0")   # what start-up reads (test_cpu_settings.py)
    with settings.using(**dataclasses.asdict(settings.from_environment())):
        assert winograd._CONV not in traced()
    with settings.disabled():  # bench.py's FLOP count traces XLA's conv
        assert winograd._CONV not in traced()
    x16 = x.astype(jnp.bfloat16)
    assert winograd._CONV not in str(jax.make_jaxpr(lambda v: conv.apply(v, x16))(variables))


SPLIT = """
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from hanet_jax.ops.cpu import conv as blas_conv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 16), np.float32)
    k = rng.standard_normal((3, 3, 16, 32), np.float32)
    fn = jax.jit(lambda x, k: (blas_conv.conv3x3(x, k),
                               jax.grad(lambda x: jnp.sum(jnp.sin(blas_conv.conv3x3(x, k))))(x)))
    y1, dx1 = fn(x, k)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    y2, dx2 = fn(jax.device_put(x, NamedSharding(mesh, P("data"))), k)
    same = bool(np.array_equal(y1, y2) and np.array_equal(dx1, dx2))
    print(len(jax.devices()), same, y2.sharding.spec == P("data"), "winograd" in str(jax.make_jaxpr(fn)(x, k)))
"""


@needs_handler
def test_split_over_two_devices_stays_batch_sharded():
    done = run_python(SPLIT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert done.returncode == 0, done.stderr[-3000:]
    # Each image's tiles are computed alone, so the split changes no bit.
    assert done.stdout.split() == ["2", "True", "True", "True"]


TARGETS = """
    import os, numpy as np, jax, jax.numpy as jnp
    from hanet_jax.ops.cpu import build, winograd
    from hanet_jax.ops.cpu import conv as blas_conv
    rng = np.random.default_rng(0)
    for march in ("x86-64-v3", "x86-64"):  # AVX2's tiles, and SSE's
        os.environ[build.MARCH_ENV] = march
        conv = "wino_" + march
        build.load_handlers(winograd._SOURCE, {conv: "WinogradConv"})
        worst = {}
        for m in (2, 4):
            for c, f in [(16, 16), (32, 48), (8, 24)]:  # both row tiles at each width
                x = rng.standard_normal((2, 8, 12, c), np.float32)
                k = rng.standard_normal((3, 3, c, f), np.float32)
                got = jax.ffi.ffi_call(conv, jax.ShapeDtypeStruct((2, 8, 12, f), np.float32))(
                    x, k, m=np.int64(m), flip=False, band_bytes=np.int64(4096), l3_bytes=np.int64(1 << 20))
                ref = blas_conv._xla_conv(x, k)
                err = float(jnp.max(jnp.abs(got - ref)) / jnp.max(jnp.abs(ref)))
                worst[m] = max(worst.get(m, 0.0), err)
        print(march, worst[2], worst[4])
"""


@needs_handler
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 targets")
@pytest.mark.slow
def test_other_targets_match_xla(tmp_path):
    done = run_python(TARGETS, HANET_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in done.stdout.splitlines()}
    assert set(rows) == {"x86-64-v3", "x86-64"}
    for m2, m4 in rows.values():
        assert m2 < TOLERANCE[2] and m4 < TOLERANCE[4], rows


@needs_handler
@pytest.mark.parametrize("m,shape", [(2, (2, 8, 12, 16)), (4, (3, 16, 16, 32))])
def test_conv_of_affine_relu_matches_xla(m, shape, force_m, cpu_settings):
    # An inference BatchNorm + ReLU applied by the handler as it reads x (bands of one row group).
    cpu_settings(band_bytes=4096)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    scale = jnp.asarray(rng.uniform(0.5, 2.0, shape[-1]).astype(np.float32))
    shift = jnp.asarray(rng.standard_normal(shape[-1]).astype(np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, shape[-1], 16)).astype(np.float32) / 12)
    force_m(m)
    assert ops.fuses_affine_relu(x, 16)
    got = jax.jit(winograd.conv_of_affine_relu)(x, scale, shift, kernel)
    want = blas_conv._xla_conv(jax.nn.relu(x * scale + shift), kernel)
    assert 0 < _rel(got, want) < TOLERANCE[m]
    assert float(jnp.mean(x * scale + shift < 0)) > 0.2  # the ReLU has work to do


@needs_handler
@pytest.mark.slow
def test_densenet_inference_reads_batchnorm_into_the_conv(monkeypatch):
    # Inference: the dense layers' second BN + ReLU in the 3x3 conv's handler (BatchNormAffine,
    # the same variables as flax's BatchNorm). Same values as with flax's BatchNorm, with BN
    # statistics that are not the identity.
    enc = densenet.DenseNet121(blocks=(2, 1, 1, 1))
    x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32))
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
    v_infer = enc.init(jax.random.key(0), x, train=False)
    v_train = enc.init(jax.random.key(0), x, train=True)
    assert shapes(v_infer) == shapes(v_train)
    leaves, tree = jax.tree_util.tree_flatten(v_train)
    rng = np.random.default_rng(3)
    v = jax.tree_util.tree_unflatten(tree, [jnp.asarray(np.abs(rng.standard_normal(a.shape)).astype(np.float32) + 0.5)
                                            if a.ndim == 1 else a for a in leaves])
    fused = lambda v: enc.apply(v, x, train=False)[0]  # noqa: E731
    assert winograd._CONV_AFFINE_RELU in str(jax.make_jaxpr(fused)(v))
    got = jax.jit(fused)(v)
    monkeypatch.setattr(ops, "fuses_affine_relu", lambda x, f: False)
    plain = lambda v: enc.apply(v, x, train=False)[0]  # noqa: E731
    assert winograd._CONV_AFFINE_RELU not in str(jax.make_jaxpr(plain)(v))
    want = jax.jit(plain)(v)
    assert 0 < _rel(got, want) < 1e-5
