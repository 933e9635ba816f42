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
    ]
    for extra, message in cases:
        assert cli.main(base + extra) == 2
        assert message in capsys.readouterr().err
    (images / "a.jpg").unlink()
    assert cli.main(base + ["--output", str(tmp_path / "out")]) == 2
    assert str(tmp_path / "no_checkpoint") in capsys.readouterr().err  # then the checkpoint is checked
    assert not (tmp_path / "out").exists()
