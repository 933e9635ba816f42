"""Numerical parity: our Keras rebuild (random weights and BN statistics) -> .weights.h5 -> port -> Flax.

The probabilities must agree within 5e-5 and every named intermediate (the five encoder skips,
the final DenseNet features, the bottleneck, GSA, SDPA, TAM and each SFEB output) must agree too.
Run with `-s` to see the max abs differences.
"""

import subprocess
import sys

import jax
import keras
import numpy as np
import pytest
from PIL import Image

from hanet_jax.inference.predictor import preprocess, resize_probabilities
from hanet_jax.models.hanet import HANet
from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu import settings, targets
from hanet_jax.port.keras import load_keras_hanet
from hanet_jax.port.weight_files import PortError
from hanet_jax.reference.keras_original import build_keras_hanet, intermediate_model, randomize_weights

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# Keras intermediate name -> path into Flax's sown "intermediates".
FLAX_INTERMEDIATE = {
    "conv1_bn": ("conv1_bn",), "pool1": ("pool1",), "pool2_pool": ("pool2_pool",),
    "pool3_pool": ("pool3_pool",), "pool4_pool": ("pool4_pool",), "features": ("features",),
    "bottleneck": ("bottleneck",), "gsa": ("tam", "gsa_out"), "sdpa": ("tam", "sdpa_out"),
    "tam": ("tam", "tam_out"), **{f"sfeb{i}": (f"dec{i}", "sfeb_out") for i in range(1, 5)},
}


def keras_outputs(model, x):
    inter = intermediate_model(model)
    pool4 = keras.Model(model.input, model.get_layer("pool4_pool").output)
    out = {k: np.asarray(v) for k, v in inter(x, training=False).items()}
    out["pool4_pool"] = np.asarray(pool4(x, training=False))
    return out


def flax_outputs(variant, variables, x):
    model = HANet(variant=variant)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))
    handlers = [t for t in targets.ALL if t in forward.lower(variables, x).as_text()]
    logits, state = forward(variables, x)
    out = {"probabilities": np.asarray(jax.nn.sigmoid(logits))}
    for name, path in FLAX_INTERMEDIATE.items():
        node = state["intermediates"]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            out[name] = np.asarray(node[0])
    return out, handlers


def saved_random_keras(tmp_path, variant, size, seed=0):
    model = randomize_weights(build_keras_hanet(variant, (*size, 3)), seed=seed)
    path = tmp_path / f"{variant}.weights.h5"
    model.save_weights(path)
    return model, path


@pytest.mark.parametrize("variant, size", [  # the full model in the quick loop, the rest slow
    ("full", (64, 96)), *(pytest.param(v, (64, 64), marks=pytest.mark.slow)
                          for v in ("no_tam", "no_tam_no_sfeb", "baseline"))])
def test_port_matches_keras(tmp_path, variant, size):
    keras_model, path = saved_random_keras(tmp_path, variant, size, seed=11)
    variables = load_keras_hanet(path, variant, size)
    x = np.random.default_rng(1).uniform(size=(2, *size, 3)).astype(np.float32)
    ref = keras_outputs(keras_model, x)
    assert ref["probabilities"].std() > 0.02  # not saturated: the comparison means something
    # Both paths: this CPU's handlers (where they build here) and XLA's ops alone (a GPU's,
    # a TPU's and every export's graph).
    for handlers in ([True, False] if cpu_conv.available() else [False]):
        with settings.using(handlers=handlers):
            ours, used = flax_outputs(variant, variables, x)
        assert bool(used) is handlers, used
        assert set(ours) == set(ref)
        path_name = "handlers" if handlers else "XLA only"
        prob_diff = np.abs(ours["probabilities"] - ref["probabilities"]).max()
        print(f"\n[parity] {variant} {size} ({path_name}): probabilities max abs diff {prob_diff:.2e} "
              f"(spread {ref['probabilities'].min():.3f}..{ref['probabilities'].max():.3f})")
        assert prob_diff < 5e-5
        for name in sorted(set(ref) - {"probabilities"}):
            diff = np.abs(ours[name] - ref[name]).max()
            scale = max(1.0, np.abs(ref[name]).max())
            print(f"[parity]   {name:<11} shape {ref[name].shape}: max abs diff {diff:.2e} (scale {scale:.1f})")
            assert diff <= 1e-4 * scale, f"{name} ({path_name})"


@pytest.mark.slow
def test_port_rejects_files_that_do_not_fit(tmp_path):
    _, path = saved_random_keras(tmp_path, "full", (64, 64))
    with pytest.raises(PortError, match=r"unexpected array layers/global_spatial_attention"):
        load_keras_hanet(path, "no_tam", (64, 64))
    with pytest.raises(PortError, match=r"misshaped array layers/global_spatial_attention/vars/0.*\n(.|\n)*--image_size"):
        load_keras_hanet(path, "full", (64, 96))
    bad = tmp_path / "corrupt.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(PortError, match="corrupt.weights.h5"):
        load_keras_hanet(bad, "full", (64, 64))


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_port_then_predict_matches_keras(tmp_path):
    keras_model, path = saved_random_keras(tmp_path, "full", (64, 64), seed=5)
    ckpt = tmp_path / "ported"
    r = run("-m", "hanet_jax.port", "keras-hanet", "--weights", str(path), "--variant", "full",
            "--image_size", "64", "--out", str(ckpt))
    assert r.returncode == 0, r.stderr

    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)).save(src / "grey.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)).save(src / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(src / "colour.jpg")
    Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(src / "small.bmp")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    r = run("predict.py", "--checkpoint", str(ckpt), "--input", str(src), "--output", str(out), "--probabilities")
    assert r.returncode == 1  # one file failed ...
    assert "broken.png" in r.stderr  # ... and is named
    from hanet_jax.data.layouts import read_image

    for name in ("grey.png", "rgba.png", "colour.jpg", "small.bmp"):
        stem = name.split(".")[0]
        image = read_image(str(src / name))
        prob = np.load(out / f"{stem}.npy")
        mask = np.asarray(Image.open(out / f"{stem}.png"))
        assert prob.dtype == np.float32 and prob.shape == image.shape[:2] == mask.shape
        np.testing.assert_array_equal(mask > 0, prob >= 0.5)
        ref = np.asarray(keras_model(preprocess(image, (64, 64))[None], training=False))[0, ..., 0]
        diff = np.abs(prob - resize_probabilities(ref, image.shape[:2])).max()
        print(f"\n[parity] predict.py {name}: max abs diff vs Keras {diff:.2e}")
        assert diff < 5e-5

    # The masks of a scored protocol: threshold and post-processing from an eval.py JSON.
    settings = tmp_path / "eval_test.json"
    settings.write_text('{"protocols": {"fixed": {"threshold": 0.45, "postprocess": "largest_component"}}}')
    (src / "broken.png").unlink()
    out2 = tmp_path / "out2"
    r = run("predict.py", "--checkpoint", str(ckpt), "--input", str(src), "--output", str(out2),
            "--settings_from", str(settings))
    assert r.returncode == 0, r.stderr
    assert "threshold 0.45, post-processing largest_component" in r.stdout
    from hanet_jax.inference.postprocess import fixed_mask
    for stem in ("grey", "rgba", "colour", "small"):
        mask = np.asarray(Image.open(out2 / f"{stem}.png")) > 0
        np.testing.assert_array_equal(mask, fixed_mask(np.load(out / f"{stem}.npy"), 0.45, "largest_component"))


def test_cli_port_error_names_the_problem(tmp_path):
    _, path = saved_random_keras(tmp_path, "baseline", (64, 64))
    r = run("-m", "hanet_jax.port", "keras-hanet", "--weights", str(path), "--variant", "full",
            "--image_size", "64", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "does not fit HA-Net variant 'full'" in r.stderr and "missing array" in r.stderr
    assert "Traceback" not in r.stderr
