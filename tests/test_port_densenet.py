"""DenseNet-121 ImageNet-weight ports: Keras (legacy HDF5 and Keras 3 .weights.h5) and torchvision.

Each port is checked numerically. Random weights and random BatchNorm statistics are ported, and
the ported Flax `DenseNet121` must reproduce the source framework's final features and the five
named skips within 1e-4 of each tensor's scale, on a non-square input. The encoder checkpoint the
CLI writes must drop into `HANet` under "encoder".
"""

import json

import h5py
import jax
import keras
import numpy as np
import pytest

from hanet_jax.checkpoints.format import restore_variables
from hanet_jax.models.densenet import DENSENET_EPS, SKIP_NAMES, DenseNet121
from hanet_jax.models.hanet import HANet
from hanet_jax.port.__main__ import main as port_main
from hanet_jax.port.keras_densenet import load_densenet121
from hanet_jax.port.weight_files import PortError
from hanet_jax.port.keras_densenet import load_encoder_checkpoint, save_encoder_checkpoint
from hanet_jax.reference.keras_original import randomize_weights

SIZE = (64, 96)  # non-square, multiples of 32
OUTPUTS = SKIP_NAMES + ("features",)
KERAS_LAYER = {**{n: n for n in SKIP_NAMES}, "features": "relu"}


@jax.jit
def _densenet_keras_eps(variables, x):
    return DenseNet121(epsilon=DENSENET_EPS).apply(variables, x, train=False)


@jax.jit
def _densenet_torch_eps(variables, x):
    return DenseNet121(epsilon=1e-5).apply(variables, x, train=False)


def flax_outputs(variables, x, eps=DENSENET_EPS):
    fn = _densenet_keras_eps if eps == DENSENET_EPS else _densenet_torch_eps
    features, skips = fn(variables, x)
    return {"features": np.asarray(features), **{k: np.asarray(v) for k, v in skips.items()}}


def assert_close(ours, ref, tol=1e-4):
    assert set(ours) >= set(ref)
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        scale = float(np.abs(ref[name]).max())
        diff = float(np.abs(ours[name] - ref[name]).max())
        print(f"[densenet port] {name:<10} {ref[name].shape}: max abs diff {diff:.2e} (scale {scale:.2f})")
        assert scale > 0 and diff <= tol * scale, name


def same_tree(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------- Keras

@pytest.fixture(scope="module")
def keras_densenet(tmp_path_factory):
    """A Keras DenseNet-121 (no top) with random weights and BN statistics, its reference outputs
    on a 64x96 input, and the same weights saved in the legacy and the Keras 3 layouts."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    tmp = tmp_path_factory.mktemp("keras_densenet")
    model = randomize_weights(keras.applications.DenseNet121(include_top=False, weights=None,
                                                             input_shape=(*SIZE, 3)), seed=3)
    x = np.random.default_rng(0).uniform(size=(2, *SIZE, 3)).astype(np.float32)
    probe = keras.Model(model.input, {k: model.get_layer(v).output for k, v in KERAS_LAYER.items()})
    ref = {k: np.asarray(v) for k, v in probe(x, training=False).items()}
    legacy = tmp / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(legacy, "w") as f:
        save_weights_to_hdf5_group(f, model)
    keras3 = tmp / "densenet121.weights.h5"
    model.save_weights(keras3)
    return {"model": model, "x": x, "ref": ref, "legacy": legacy, "keras3": keras3, "tmp": tmp}


def test_keras_legacy_h5_reproduces_keras(keras_densenet):
    variables = load_densenet121(keras_densenet["legacy"])
    assert_close(flax_outputs(variables, keras_densenet["x"]), keras_densenet["ref"])


@pytest.mark.slow
def test_keras3_weights_h5_reproduces_keras(keras_densenet):
    variables = load_densenet121(keras_densenet["keras3"])
    assert_close(flax_outputs(variables, keras_densenet["x"]), keras_densenet["ref"])
    same_tree(variables, load_densenet121(keras_densenet["legacy"]))


@pytest.mark.slow
def test_keras_with_top_and_keras2_names(keras_densenet):
    """The with-top file (classifier ignored) and Keras 2's `conv1/conv` spelling port the same."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    tmp, notop = keras_densenet["tmp"], keras_densenet["model"]
    expected = load_densenet121(keras_densenet["legacy"])
    top = keras.applications.DenseNet121(include_top=True, weights=None, input_shape=(*SIZE, 3), classes=7)
    for layer in notop.layers:
        if layer.weights:
            top.get_layer(layer.name).set_weights(layer.get_weights())
    path = tmp / "densenet121_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, top)
    assert "predictions" in h5py.File(path, "r")
    same_tree(load_densenet121(path), expected)

    # Keras 2 wrote layers as `conv1/conv` (nested HDF5 groups) and weights as `.../kernel:0`.
    old = tmp / "keras2_style.h5"
    with h5py.File(keras_densenet["legacy"], "r") as src, h5py.File(old, "w") as dst:
        names = []
        text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        for name in map(text, src.attrs["layer_names"]):
            new = {"conv1_conv": "conv1/conv", "conv1_bn": "conv1/bn", "conv1_relu": "conv1/relu"}.get(name, name)
            names.append(new.encode())
            group = dst.create_group(new)
            weight_names = []
            for w in map(text, src[name].attrs["weight_names"]):
                w_new = f"{new}/{w.split('/')[-1]}:0"
                group.create_dataset(w_new, data=np.asarray(src[name][w]))
                weight_names.append(w_new.encode())
            group.attrs["weight_names"] = weight_names
        dst.attrs["layer_names"] = names
    same_tree(load_densenet121(old), expected)


def test_keras_port_errors_name_file_and_arrays(keras_densenet, tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(keras_densenet["legacy"], "r") as src, h5py.File(bad, "w") as dst:
        for key in src:
            src.copy(key, dst)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        del dst["pool3_conv"]
        dst.create_group("pool3_conv").attrs["weight_names"] = []
        gamma = "bn/gamma"
        del dst["bn"][gamma]
        dst["bn"].create_dataset(gamma, data=np.ones(7, np.float32))
    with pytest.raises(PortError) as err:
        load_densenet121(bad)
    msg = str(err.value)
    assert str(bad) in msg and "pool3_conv/kernel" in msg and "bn/gamma" in msg and "(7,)" in msg

    wrong = tmp_path / "wrong.weights.h5"
    with h5py.File(keras_densenet["keras3"], "r") as src, h5py.File(wrong, "w") as dst:
        for key in src:
            src.copy(key, dst)
        del dst["layers/conv2d/vars/0"]
    with pytest.raises(PortError, match=r"wrong\.weights\.h5.*\n.*missing array layers/conv2d/vars/0"):
        load_densenet121(wrong)
    with pytest.raises(PortError, match="does not exist"):
        load_densenet121(tmp_path / "nope.h5")


@pytest.mark.slow
def test_encoder_checkpoint_drops_into_hanet(keras_densenet, tmp_path):
    """CLI -> encoder checkpoint -> restore -> HANet(baseline) params["encoder"] -> forward."""
    out = tmp_path / "enc"
    assert port_main(["keras-densenet", "--weights", str(keras_densenet["legacy"]), "--out", str(out)]) == 0
    meta = json.loads((out / "hanet.json").read_text())
    assert meta["kind"] == "encoder" and meta["image_size"] == [0, 0]
    assert meta["model"] == {"encoder_epsilon": DENSENET_EPS, "input_normalization": "imagenet"}
    assert meta["source"]["kind"] == "keras-densenet"

    restored = restore_variables(out)
    assert set(restored) == {"params", "batch_stats"}
    assert set(restored["params"]) == {"encoder"} and set(restored["batch_stats"]) == {"encoder"}
    same_tree(restored, load_encoder_checkpoint(out)[0])

    model = HANet(variant="baseline", encoder_epsilon=meta["model"]["encoder_epsilon"])
    x = keras_densenet["x"][:, :64, :64]
    # The decoder's values do not matter here; eval_shape spares compiling `init`.
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    variables = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.01, s.dtype), shapes)
    variables = {c: {**variables[c], "encoder": restored[c]["encoder"]} for c in ("params", "batch_stats")}
    logits, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(variables, x)
    assert logits.shape == (2, 64, 64, 1) and np.isfinite(np.asarray(logits)).all()
    encoder_only = {c: restored[c]["encoder"] for c in ("params", "batch_stats")}
    features = flax_outputs(encoder_only, x)["features"]
    np.testing.assert_allclose(np.asarray(state["intermediates"]["features"][0]), features,
                               rtol=0, atol=1e-5 * np.abs(features).max())

    with pytest.raises(Exception, match="already exists"):
        save_encoder_checkpoint(out, encoder_only, epsilon=DENSENET_EPS)
    assert port_main(["keras-densenet", "--weights", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x")]) == 2


# --------------------------------------------------------------------------- torchvision

def random_torch_state_dict(seed=0, old_style=False):
    """A torchvision-layout DenseNet-121 state dict with random weights and running stats."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(key, cout, cin, k):
        sd[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=g) * (1.2 / np.sqrt(cin * k * k))

    def norm(key, c):
        sd[f"{key}.weight"] = torch.rand(c, generator=g) + 0.5
        sd[f"{key}.bias"] = torch.randn(c, generator=g) * 0.1
        sd[f"{key}.running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[f"{key}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{key}.num_batches_tracked"] = torch.tensor(7)

    conv("features.conv0", 64, 3, 7)
    norm("features.norm0", 64)
    c = 64
    for b, n in enumerate((6, 12, 24, 16), start=1):
        for i in range(1, n + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            n1, c1, n2, c2 = ((f"{p}.norm.1", f"{p}.conv.1", f"{p}.norm.2", f"{p}.conv.2") if old_style else
                              (f"{p}.norm1", f"{p}.conv1", f"{p}.norm2", f"{p}.conv2"))
            norm(n1, c)
            conv(c1, 128, c, 1)
            norm(n2, 128)
            conv(c2, 32, 128, 3)
            c += 32
        if b < 4:
            norm(f"features.transition{b}.norm", c)
            conv(f"features.transition{b}.conv", c // 2, c, 1)
            c //= 2
    norm("features.norm5", c)
    sd["classifier.weight"] = torch.randn(1000, c, generator=g) * 0.01
    sd["classifier.bias"] = torch.zeros(1000)
    return sd


def torch_reference(sd, x_nhwc):
    """torchvision's DenseNet-121 forward, written with torch.nn.functional; NHWC outputs."""
    import torch
    import torch.nn.functional as F

    def bn(x, key):
        return F.batch_norm(x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                            sd[f"{key}.bias"], training=False, eps=1e-5)

    out = {}
    with torch.no_grad():
        x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
        x = F.conv2d(x, sd["features.conv0.weight"], stride=2, padding=3)
        x = bn(x, "features.norm0")
        out["conv1_bn"] = x
        x = F.max_pool2d(F.relu(x), 3, stride=2, padding=1)
        out["pool1"] = x
        for b, n in enumerate((6, 12, 24, 16), start=1):
            for i in range(1, n + 1):
                p = f"features.denseblock{b}.denselayer{i}"
                y = F.conv2d(F.relu(bn(x, f"{p}.norm1")), sd[f"{p}.conv1.weight"])
                y = F.conv2d(F.relu(bn(y, f"{p}.norm2")), sd[f"{p}.conv2.weight"], padding=1)
                x = torch.cat([x, y], 1)
            if b < 4:
                p = f"features.transition{b}"
                x = F.avg_pool2d(F.conv2d(F.relu(bn(x, f"{p}.norm")), sd[f"{p}.conv.weight"]), 2, stride=2)
                out[f"pool{b + 1}_pool"] = x
        out["features"] = F.relu(bn(x, "features.norm5"))
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


@pytest.mark.slow
def test_torch_port_reproduces_torchvision_forward(tmp_path):
    torch = pytest.importorskip("torch")
    from hanet_jax.port.torch_densenet import TORCH_EPS, load_torch_densenet121, state_dict_to_flax

    sd = random_torch_state_dict(seed=1)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(sd, path)
    variables = load_torch_densenet121(path)
    x = np.random.default_rng(2).uniform(size=(2, *SIZE, 3)).astype(np.float32)
    assert_close(flax_outputs(variables, x, eps=TORCH_EPS), torch_reference(sd, x))

    old = random_torch_state_dict(seed=1, old_style=True)
    assert any(".norm.1." in k for k in old) and not any(".norm1." in k for k in old)
    same_tree(state_dict_to_flax(old), variables)

    out = tmp_path / "enc"
    assert port_main(["torch-densenet", "--weights", str(path), "--out", str(out)]) == 0
    restored, meta = load_encoder_checkpoint(out)
    assert meta["kind"] == "encoder" and meta["model"]["encoder_epsilon"] == TORCH_EPS
    same_tree({c: restored[c]["encoder"] for c in ("params", "batch_stats")}, variables)


def test_torch_port_errors_name_keys(tmp_path):
    torch = pytest.importorskip("torch")
    from hanet_jax.port.torch_densenet import load_torch_densenet121

    sd = random_torch_state_dict(seed=0)
    del sd["features.denseblock2.denselayer3.conv2.weight"]
    sd["features.norm5.weight"] = torch.ones(5)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(PortError) as err:
        load_torch_densenet121(path)
    msg = str(err.value)
    assert "broken.pth" in msg and "features.denseblock2.denselayer3.conv2.weight" in msg
    assert "features.norm5.weight" in msg and "(5,)" in msg

    sd = random_torch_state_dict(seed=0)
    sd["features.denseblock9.extra.weight"] = torch.ones(1)
    torch.save(sd, path)
    with pytest.raises(PortError, match="features.denseblock9.extra.weight"):
        load_torch_densenet121(path)
