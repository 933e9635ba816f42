"""predict.py refuses bad input before loading a model, naming the folder, file or flag."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _cli():
    spec = importlib.util.spec_from_file_location("predict_cli", ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_input_is_refused_with_its_name(tmp_path, capsys):
    cli = _cli()
    images = tmp_path / "in"
    images.mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / name)
    base = ["--checkpoint", str(tmp_path / "no_checkpoint"), "--input", str(images)]
    cases = [
        (["--output", str(tmp_path / "out"), "--batch_size", "0"], "--batch_size must be >= 1"),
        (["--output", str(tmp_path / "out"), "--threshold", "1.5"], "--threshold must be in [0, 1]"),
        (["--output", str(images)], "is the --input folder"),
        (["--output", str(tmp_path / "out")], "a.jpg, a.png"),  # both would become a.png
        (["--output", str(tmp_path / "out"), "--settings_from", str(tmp_path / "none.json")],
         f"--settings_from {tmp_path / 'none.json'}: not an eval.py output"),
        (["--output", str(tmp_path / "out"), "--settings_from", str(images / "b.png")],
         f"--settings_from {images / 'b.png'}: not an eval.py output"),
        (["--output", str(tmp_path / "out"), "--settings_from", "x.json", "--threshold", "0.3"],
         "drop --threshold/--postprocess"),
    ]
    for extra, message in cases:
        assert cli.main(base + extra) == 2
        assert message in capsys.readouterr().err
    (images / "a.jpg").unlink()
    assert cli.main(base + ["--output", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "no_checkpoint") in capsys.readouterr().err  # then the checkpoint is checked
    assert not (tmp_path / "out").exists()


def test_settings_come_from_an_eval_json(tmp_path):
    cli = _cli()
    out = tmp_path / "eval_test.json"
    out.write_text('{"protocols": {"fixed": {"threshold": 0.35, "postprocess": "most_probable_component"}}}')
    assert cli.fixed_settings(str(out)) == (0.35, "most_probable_component")
    out.write_text('{"protocols": {"fixed": {"threshold": 0.35}}}')  # written before post-processing existed
    assert cli.fixed_settings(str(out)) == (0.35, "none")
    out.write_text('{"protocols": {"fixed": {"threshold": 0.35, "postprocess": "convex_hull"}}}')
    try:
        cli.fixed_settings(str(out))
    except cli.SettingsError as e:
        assert "'convex_hull'" in str(e) and str(out) in str(e)
    else:
        raise AssertionError("an unknown post-processing was accepted")
