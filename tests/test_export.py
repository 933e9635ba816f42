"""`hanet-export`: StableHLO, SavedModel and ONNX of a checkpoint, each checked against the Flax
model on the same inputs, its export.json, `predict.py --exported`, and one-line failures.

The model is a small HA-Net (full variant, one layer per dense block, 64x64) with trained-like
weights (BatchNorm statistics away from 0 and 1, logits spread over several units), so a
difference in any op shows.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from _train_helpers import ROOT, run_python
from model_fixtures import trained_like_variables
from PIL import Image

from hanet_jax.checkpoints.format import save_variables
from hanet_jax.export import cli as export_cli
from hanet_jax.export import to_onnx, to_savedmodel, to_stablehlo
from hanet_jax.export.serving_function import ExportError, ServingFunction, serving_function
from hanet_jax.inference import cli as predict_cli
from hanet_jax.inference import ensemble
from hanet_jax.models.architectures import model_config
from hanet_jax.models.hanet import HANet
from hanet_jax.ops.cpu import targets

SIZE = (64, 64)
TOLERANCE = 1e-4
THRESHOLD, POSTPROCESS = 0.35, "largest_component"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A ported-style checkpoint, with an eval.py JSON whose fixed protocol chose 0.35 and
    largest_component on validation data."""
    model = HANet(variant="full", encoder_blocks=(1, 1, 1, 1))
    variables = trained_like_variables(model, SIZE)
    directory = save_variables(tmp_path_factory.mktemp("ckpt") / "tiny", variables,
                               model_cfg=model_config(model), image_size=SIZE)
    (directory / "eval_test.json").write_text(json.dumps({"protocols": {"fixed": {
        "threshold": THRESHOLD, "threshold_source": "val", "postprocess": POSTPROCESS}}}))
    return directory, model, variables


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    directory, _, _ = checkpoint
    out = tmp_path_factory.mktemp("export")
    assert export_cli.main(["--checkpoint", str(directory), "--out", str(out)]) == 0
    return out


def _flax(model, variables, x):
    # The Flax model as predict.py runs it: this CPU's default settings (handlers on).
    return np.asarray(jax.jit(lambda v, x: jax.nn.sigmoid(model.apply(v, x, train=False)))(variables, x))


def _images(n=5, seed=7):
    return np.random.default_rng(seed).uniform(size=(n, *SIZE, 3)).astype(np.float32)


def test_the_weights_look_trained(checkpoint):
    _, model, variables = checkpoint
    logits = np.asarray(model.apply(variables, _images(), train=False))
    assert np.ptp(logits) > 5 and logits.std() > 0.8        # spread over several units
    bn = variables["batch_stats"]["encoder"]["conv1_bn"]
    assert np.abs(np.asarray(bn["mean"])).max() > 0.1 and np.abs(np.asarray(bn["var"]) - 1).max() > 0.1


@pytest.mark.slow
def test_every_format_matches_the_flax_model(checkpoint, exported):
    _, model, variables = checkpoint
    x = _images()  # five images: not the batch of the export's own check
    want = _flax(model, variables, x)
    assert want.shape == (5, *SIZE, 1)
    from hanet_jax.inference.exported import load_runner

    got = {"jax": load_runner(exported / "model.jax")(x), "onnx": load_runner(exported / "model.onnx")(x),
           "savedmodel": to_savedmodel.load(exported / "saved_model")(x)}
    for fmt, probabilities in got.items():
        diff = float(np.abs(np.asarray(probabilities) - want).max())
        print(f"\n[export] {fmt}: largest difference from the Flax model {diff:.1e}")
        assert probabilities.shape == want.shape and diff <= TOLERANCE, fmt
    manifest = json.loads((exported / "export.json").read_text())
    assert set(manifest["checks"]) == {"jax", "savedmodel", "onnx"}
    assert all(c["ok"] and c["max_abs_difference"] <= TOLERANCE for c in manifest["checks"].values())


def test_the_manifest_says_how_to_use_it(checkpoint, exported):
    directory, _, _ = checkpoint
    m = json.loads((exported / "export.json").read_text())
    assert m["input"] == {"name": "image", "dtype": "float32", "shape": [None, 64, 64, 3], "layout": "NHWC",
                          "range": [0.0, 1.0]}
    assert m["output"]["name"] == "probabilities" and m["output"]["shape"] == [None, 64, 64, 1]
    assert m["image_size"] == [64, 64] and m["platforms"] == ["cpu", "cuda", "tpu"]
    assert m["preprocessing"]["resize"]["to"] == [64, 64] and "255" in m["preprocessing"]["scale"]
    post = m["postprocessing"]
    assert (post["threshold"], post["postprocess"]) == (THRESHOLD, POSTPROCESS)
    assert str((directory / "eval_test.json").resolve()) in post["source"]
    assert m["checkpoint"]["path"] == str(directory.resolve()) and m["checkpoint"]["kind"] == "variables"
    assert m["formats"]["onnx"]["opset"] == to_onnx.OPSET
    assert {"jax", "jaxlib", "flax", "tensorflow-cpu", "jax2onnx", "onnx"} <= set(m["versions"])
    assert m["versions"]["jax"] == jax.__version__
    # The multi-platform artifact holds none of the CPU handlers.
    assert not set(m["formats"]["jax"]["custom_call_targets"]) & set(targets.CPU_ONLY)


JAX_ALONE = """
    import sys, json
    import numpy as np, jax
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    x = np.load(sys.argv[2])
    got = np.asarray(exported.call(x))
    print(json.dumps({"platforms": list(exported.platforms), "shape": list(got.shape),
                      "diff": float(np.abs(got - np.load(sys.argv[3])).max()),
                      "hanet_jax": any(m.startswith("hanet_jax") for m in sys.modules),
                      "text": exported.mlir_module()}))
"""


def test_model_jax_runs_with_jax_alone(checkpoint, exported, tmp_path):
    _, model, variables = checkpoint
    x = _images(3, seed=11)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", _flax(model, variables, x))
    script = tmp_path / "alone.py"
    script.write_text(__import__("textwrap").dedent(JAX_ALONE))
    done = subprocess.run([sys.executable, str(script), str(exported / "model.jax"), str(tmp_path / "x.npy"),
                           str(tmp_path / "want.npy")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["hanet_jax"] and out["platforms"] == ["cpu", "cuda", "tpu"]
    assert out["shape"] == [3, 64, 64, 1] and out["diff"] <= TOLERANCE
    assert not [t for t in targets.CPU_ONLY if t in out["text"]]


def _folder(tmp_path):
    """Images of several sizes, as a user's folder holds."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate([(64, 64), (90, 120), (50, 40)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"case{i}.png")
    return folder


@pytest.mark.parametrize("artifact", ["model.jax", "model.onnx"])
def test_predict_exported_gives_the_checkpoint_masks(checkpoint, exported, tmp_path, artifact):
    directory, _, _ = checkpoint
    folder = _folder(tmp_path)
    ref, got = tmp_path / "ref", tmp_path / "got"
    assert predict_cli.main(["--checkpoint", str(directory), "--input", str(folder), "--output", str(ref),
                             "--settings_from", str(directory / "eval_test.json"), "--probabilities"]) == 0
    assert predict_cli.main(["--exported", str(exported / artifact), "--input", str(folder),
                             "--output", str(got)]) == 0
    compared = 0
    for mask_file in sorted(ref.glob("*.png")):
        want = np.asarray(Image.open(mask_file)) > 0
        mine = np.asarray(Image.open(got / mask_file.name)) > 0
        prob = np.load(ref / f"{mask_file.stem}.npy")
        near = np.abs(prob - THRESHOLD) <= TOLERANCE
        assert want.shape == mine.shape and np.array_equal(want[~near], mine[~near]), mask_file.name
        compared += 1
        assert 0 < want.mean() < 1  # a mask with both classes: the comparison means something
    assert compared == 3


@pytest.mark.slow
def test_an_ensemble_exports_its_members_average(checkpoint, tmp_path):
    directory, model, variables = checkpoint
    save_variables(tmp_path / "other", trained_like_variables(model, SIZE, seed=3),
                           model_cfg=model_config(model), image_size=SIZE)
    import shutil

    shutil.copytree(directory, tmp_path / "first")
    ensemble.write(tmp_path, ["first", "other"])
    out = tmp_path / "export"
    assert export_cli.main(["--checkpoint", str(tmp_path), "--out", str(out), "--formats", "jax,onnx"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.jax", "model.onnx"]
    from hanet_jax.inference.exported import load_runner

    x = _images(2)
    second = trained_like_variables(model, SIZE, seed=3)
    want = 0.5 * (_flax(model, variables, x) + _flax(model, second, x))
    assert np.abs(load_runner(out / "model.jax")(x) - want).max() <= TOLERANCE
    assert json.loads((out / "export.json").read_text())["checkpoint"]["kind"] == "ensemble"


def _callback_serving() -> ServingFunction:
    # An op no converter can express: a host callback.
    fn = lambda x: jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(x.shape, x.dtype), x)  # noqa: E731
    return ServingFunction(fn, (32, 32), [], [], False)


@pytest.mark.parametrize("fmt", ["jax", "savedmodel", "onnx"])
def test_an_op_a_converter_cannot_express_fails_in_one_line_naming_it(fmt, tmp_path):
    writers = {"jax": lambda s: to_stablehlo.write(s, tmp_path, ("cpu", "cuda")),
               "savedmodel": lambda s: to_savedmodel.write(s, tmp_path, ("cpu", "cuda")),
               "onnx": lambda s: to_onnx.write(s, tmp_path)}
    with pytest.raises(ExportError) as raised:
        writers[fmt](_callback_serving())
    message = str(raised.value)
    assert "\n" not in message and "callback" in message, message
    assert str(tmp_path) in message
    assert not [p for p in tmp_path.iterdir()]  # nothing half-written


def test_the_command_reports_a_failed_format_in_one_line_and_writes_the_others(monkeypatch, tmp_path, capsys):
    from hanet_jax.export import serving_function as serving_module

    monkeypatch.setattr(serving_module, "serving_function", lambda *a, **k: _callback_serving())
    assert export_cli.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "out"),
                            "--formats", "onnx", "--platforms", "cpu,cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "'pure_callback'" in err, err
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_bad_input_is_one_line_and_status_2(checkpoint, tmp_path, capsys):
    directory, _, _ = checkpoint
    cases = [
        (["--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (["--checkpoint", str(directory), "--platforms", "gpu"], "--platforms"),
        (["--checkpoint", str(directory), "--formats", "jax,tflite"], "--formats"),
        (["--checkpoint", str(directory), "--image_size", "100"], "multiple of 32"),
        # the TAM's position encoding is shaped by the size it was trained at
        (["--checkpoint", str(directory), "--image_size", "128"], "cannot run at 128x128"),
        (["--checkpoint", str(directory), "--settings_from", str(tmp_path / "none.json")], "none.json"),
    ]
    for args, expected in cases:
        assert export_cli.main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1, err


def test_serving_function_rejects_members_of_different_sizes(checkpoint, tmp_path):
    directory, model, _ = checkpoint
    import shutil

    shutil.copytree(directory, tmp_path / "a")
    small = HANet(variant="no_tam", encoder_blocks=(1, 1, 1, 1))
    save_variables(tmp_path / "b", trained_like_variables(small, (32, 32)), model_cfg=model_config(small),
                   image_size=(32, 32))
    ensemble.write(tmp_path, ["a", "b"])
    with pytest.raises(ExportError, match="different image sizes"):
        serving_function(tmp_path)


def test_console_script_and_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "hanet_jax.export", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "model.jax" in done.stdout and "--platforms" in done.stdout
    assert run_python("import hanet_jax.export.cli").returncode == 0
