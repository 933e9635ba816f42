"""Our Keras 3 rebuild of the released HA-Net: counts, weight-file layout, quirks, helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hanet_jax.reference.keras_original import (  # noqa: E402
    DECODER_LAYER_NAMES,
    GlobalSpatialAttention,
    PositionEncoding,
    ScaledDotProductAttention,
    build_keras_hanet,
    conv_macs,
    count_params,
    intermediate_model,
    keras_weight_paths,
    randomize_weights,
)

COUNTS_256 = {
    "full": (15_427_713, 89_408),
    "no_tam": (15_339_329, 89_408),
    "no_tam_no_sfeb": (11_089_537, 85_184),
    "baseline": (10_498_945, 84_672),
}
SMALL = (64, 64, 3)


@pytest.fixture(scope="module")
def full_256():
    return build_keras_hanet("full", (256, 256, 3))


@pytest.fixture(scope="module")
def full_small():
    return randomize_weights(build_keras_hanet("full", SMALL), seed=3)


def _image(shape, seed=0, batch=2):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *shape)).astype("float32")


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: arrays.__setitem__(n, o.shape) if isinstance(o, h5py.Dataset) else None)
    return arrays


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("variant", list(COUNTS_256))
def test_param_counts_256(variant, full_256):
    model = full_256 if variant == "full" else build_keras_hanet(variant, (256, 256, 3))
    assert count_params(model) == COUNTS_256[variant]


def test_conv_macs_256_match_the_release_count(full_256):
    # The spec measured 7.93 G on the rebuilt release: only SFEB's F conv with 'same' gives it.
    assert conv_macs(full_256) == 7_932_211_200
    # GSA's 1x1 convs are sublayers, outside the release's model.layers loop
    assert conv_macs(full_256, include_sublayers=True) == 7_932_211_200 + 64 * (32 + 32 + 256) * 256


@pytest.mark.slow
def test_the_cost_breakdown_reconstructs_the_papers_and_the_profilers_counts(full_256):
    from hanet_jax.bench import flops

    costs = flops.keras_cost_breakdown(full_256, (256, 256, 3))
    assert round(costs["keras_profiler_forward_gflops"], 2) == 15.95  # the spec's profiler figure
    assert round(costs["paper_style_g"], 2) == 8.01  # the paper's figure, reconstructed
    assert costs["keras_conv_macs_g"] == 7.9322112 and costs["gsa_conv_macs_g"] == 0.00524288


def test_conv_macs_valid_sfeb_padding_misses_the_release_figure():
    model = build_keras_hanet("full", (256, 256, 3), sfeb_padding="valid")
    assert count_params(model) == COUNTS_256["full"]
    assert conv_macs(model) == 7_767_797_760


# ----------------------------------------------------------------------------- weight file


def test_save_weights_layout(full_256, tmp_path):
    path = tmp_path / "full.weights.h5"
    full_256.save_weights(str(path))
    arrays = _h5_arrays(path)
    assert len(arrays) == 727
    for p in (
        "layers/global_spatial_attention/proj_key/vars/0",
        "layers/global_spatial_attention/proj_query/vars/1",
        "layers/global_spatial_attention/proj_value/vars/0",
        "layers/global_spatial_attention/vars/0",
        "layers/position_encoding/h_embedding_layer/vars/0",
        "layers/position_encoding/w_embedding_layer/vars/0",
        "layers/batch_normalization/vars/3",
        "layers/batch_normalization_57/vars/0",
        "layers/conv2d/vars/0",
    ):
        assert p in arrays, p
    assert arrays["layers/global_spatial_attention/vars/0"] == (64, 64)
    assert arrays["layers/global_spatial_attention/proj_key/vars/0"] == (1, 1, 256, 32)
    assert arrays["layers/position_encoding/h_embedding_layer/vars/0"] == (8, 128)
    assert not any("scaled_dot_product_attention" in p for p in arrays)  # no weights

    # The live-name -> file-group map the port uses agrees with the file, var by var.
    groups = keras_weight_paths(full_256)
    for layer in full_256.layers:
        own = layer._trainable_variables + layer._non_trainable_variables
        for j, v in enumerate(own):
            assert arrays[f"{groups[layer.name]}/vars/{j}"] == tuple(v.shape), layer.name
    expected = {
        "conv1_conv": "layers/conv2d",
        "conv1_bn": "layers/batch_normalization",
        "bottleneck_conv": "layers/conv2d_120",
        "bottleneck_bn": "layers/batch_normalization_121",
        "gsa": "layers/global_spatial_attention",
        "position_encoding": "layers/position_encoding",
        "sdpa": "layers/scaled_dot_product_attention",
        "dec1_sfeb_conv": "layers/conv2d_121",
        "dec1_sfeb_ctx_conv": "layers/conv2d_122",
        "dec1_sfeb_gate_conv": "layers/conv2d_123",
        "dec1_conv": "layers/conv2d_124",
        "dec1_sfeb_bn": "layers/batch_normalization_122",
        "dec1_sfeb_ctx_bn": "layers/batch_normalization_123",
        "dec1_sfeb_gate_bn": "layers/batch_normalization_124",
        "dec1_bn": "layers/batch_normalization_125",
        "dec4_conv": "layers/conv2d_136",
        "head_conv": "layers/conv2d_137",
        "head_bn1": "layers/batch_normalization_138",
        "head_bn2": "layers/batch_normalization_139",
        "output_conv": "layers/conv2d_138",
    }
    assert {k: groups[k] for k in expected} == expected


def test_save_load_round_trip(full_small, tmp_path):
    x = _image(SMALL, seed=1)
    ref = np.asarray(full_small(x, training=False))
    path = tmp_path / "small.weights.h5"
    full_small.save_weights(str(path))
    fresh = build_keras_hanet("full", SMALL)
    assert not np.allclose(np.asarray(fresh(x, training=False)), ref, atol=1e-3)
    fresh.load_weights(str(path))
    np.testing.assert_allclose(np.asarray(fresh(x, training=False)), ref, rtol=1e-5, atol=1e-6)


def test_custom_layers_registered():
    for cls in (GlobalSpatialAttention, PositionEncoding, ScaledDotProductAttention):
        assert keras.saving.get_registered_object(f"hanet>{cls.__name__}") is cls
    pe = PositionEncoding(in_dim=(3, 2), out_dim=4)
    assert PositionEncoding.from_config(pe.get_config()).get_config() == pe.get_config()


# -------------------------------------------------------------------------------- forwards


def test_intermediates_and_randomized_spread(full_small):
    out = intermediate_model(full_small)(_image(SMALL), training=False)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "conv1_bn": (2, 32, 32, 64),
        "pool1": (2, 16, 16, 64),
        "pool2_pool": (2, 8, 8, 128),
        "pool3_pool": (2, 4, 4, 256),
        "features": (2, 2, 2, 1024),
        "bottleneck": (2, 2, 2, 256),
        "gsa": (2, 2, 2, 256),
        "sdpa": (2, 2, 2, 256),
        "tam": (2, 2, 2, 256),
        "sfeb1": (2, 4, 4, 256),
        "sfeb2": (2, 8, 8, 256),
        "sfeb3": (2, 16, 16, 128),
        "sfeb4": (2, 32, 32, 64),
        "probabilities": (2, 64, 64, 1),
    }
    for v in out.values():
        assert np.isfinite(np.asarray(v)).all()
    np.testing.assert_allclose(
        np.asarray(out["tam"]), np.asarray(out["gsa"]) + np.asarray(out["sdpa"]), rtol=1e-5, atol=1e-5
    )
    p = np.asarray(out["probabilities"])
    assert p.std() > 0.05 and ((p > 0.01) & (p < 0.99)).mean() > 0.9, (p.min(), p.max(), p.std())
    # every BN statistic moved away from its default
    for layer in full_small._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            for v, default in ((layer.gamma, 1), (layer.beta, 0), (layer.moving_mean, 0), (layer.moving_variance, 1)):
                assert not np.allclose(np.asarray(v), default), layer.name
            assert np.asarray(layer.moving_variance).min() > 0


def test_variant_intermediate_keys():
    keys = set(intermediate_model(build_keras_hanet("no_tam_no_sfeb", SMALL)).output)
    assert keys == {"conv1_bn", "pool1", "pool2_pool", "pool3_pool", "features", "bottleneck", "probabilities"}


def test_non_square_input():
    model = randomize_weights(build_keras_hanet("full", (96, 64, 3)), seed=1)
    gsa, pe = model.get_layer("gsa"), model.get_layer("position_encoding")
    assert tuple(gsa.W.shape) == (6, 6)
    assert tuple(pe.h_embedding_layer.embeddings.shape) == (3, 128)
    assert tuple(pe.w_embedding_layer.embeddings.shape) == (2, 128)
    y = np.asarray(model(_image((96, 64, 3), batch=1), training=False))
    assert y.shape == (1, 96, 64, 1) and np.isfinite(y).all()
    with pytest.raises(ValueError):
        build_keras_hanet("full", (80, 64, 3))
    with pytest.raises(ValueError):
        build_keras_hanet("full", (32, 64, 3), sfeb_padding="valid")  # valid SFEB conv needs a >= 3x3 map


def test_layer_names_present(full_small):
    names = {layer.name for layer in full_small.layers}
    for stage in DECODER_LAYER_NAMES.values():
        assert set(stage.values()) <= names
    assert {"bottleneck_conv", "bottleneck_bn", "gsa", "position_encoding", "sdpa"} <= names
    assert {"head_up", "head_conv", "head_bn1", "head_bn2", "output_conv"} <= names


# ------------------------------------------------------------------- hand-written numpy checks


def test_gsa_matches_numpy_raw_reshapes():
    b, h, w, c = 2, 2, 3, 16  # non-square, so a transpose would give a different answer
    rng = np.random.default_rng(0)
    x = rng.normal(size=(b, h, w, c)).astype("float32")
    layer = GlobalSpatialAttention(in_channel=c)
    layer(x)
    for sub in (layer.proj_query, layer.proj_key, layer.proj_value):
        sub.bias.assign(rng.normal(0, 0.1, sub.bias.shape).astype("float32"))
    layer.W.assign(rng.normal(0, 0.5, layer.W.shape).astype("float32"))
    got = np.asarray(layer(x))

    def proj(sub):
        return x @ np.asarray(sub.kernel)[0, 0] + np.asarray(sub.bias)

    n, cr = h * w, c // 8
    q = proj(layer.proj_query).reshape(b, n, cr)
    k = proj(layer.proj_key).reshape(b, cr, n)
    a = _softmax(q @ k)
    v = proj(layer.proj_value).reshape(b, c, n)
    want = ((v @ a) @ np.asarray(layer.W)).reshape(b, h, w, c) + x
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # a transpose-based reading gives a clearly different answer
    kt = proj(layer.proj_key).reshape(b, n, cr).transpose(0, 2, 1)
    vt = proj(layer.proj_value).reshape(b, n, c).transpose(0, 2, 1)
    alt = ((vt @ _softmax(q @ kt)) @ np.asarray(layer.W)).transpose(0, 2, 1).reshape(b, h, w, c) + x
    assert not np.allclose(got, alt, atol=1e-3)


def test_position_encoding_matches_numpy():
    layer = PositionEncoding(in_dim=(3, 2), out_dim=4)
    x = np.zeros((2, 3, 2, 8), "float32")
    got = np.asarray(layer(x))
    rows = np.asarray(layer.h_embedding_layer.embeddings)
    cols = np.asarray(layer.w_embedding_layer.embeddings)
    want = np.concatenate(
        [np.broadcast_to(rows[:, None], (3, 2, 4)), np.broadcast_to(cols[None], (3, 2, 4))], -1
    )
    np.testing.assert_allclose(got, np.broadcast_to(want, (2, 3, 2, 8)), rtol=0, atol=0)
    assert np.abs(rows).max() <= 0.05 and np.abs(cols).max() <= 0.05  # uniform(-0.05, 0.05)


def test_sdpa_matches_numpy_and_dropout_only_in_training():
    b, h, w, c = 2, 3, 2, 16
    x = np.random.default_rng(1).normal(size=(b, h, w, c)).astype("float32")
    layer = ScaledDotProductAttention()
    assert isinstance(layer.dropout, keras.layers.Dropout) and layer.dropout.rate == 0.1
    s = x.reshape(b, h * w, c)
    want = (_softmax(s @ s.transpose(0, 2, 1) / np.sqrt(c)) @ s).reshape(b, h, w, c)
    for training in (None, False):
        np.testing.assert_allclose(np.asarray(layer(x, training=training)), want, rtol=1e-4, atol=1e-5)
    assert not layer.weights
    # 10% dropout on 2*6*6 attention weights: essentially never a no-op
    t1, t2 = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
    assert not np.allclose(t1, want, atol=1e-4)
    assert not np.allclose(t1, t2, atol=1e-4)
