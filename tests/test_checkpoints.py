"""A damaged checkpoint folder gets a CheckpointError naming the file, never a deep traceback."""

from __future__ import annotations

import json

import pytest

from hanet_jax.checkpoints import format as checkpoints
from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.checkpoints.loading import load_bundle

MODEL = {"variant": "baseline", "encoder_blocks": [1, 1, 1, 1]}


def _meta(directory, payload) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / checkpoints.META_FILE
    path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())


@pytest.mark.parametrize("payload, message", [
    ([1, 2], "must hold a JSON object, not list"),
    (b"\xff\xfe{", "is not valid JSON"),
    ({"kind": "variables", "model": MODEL}, "bad model description: 'image_size'"),
    ({"kind": "variables", "model": MODEL, "image_size": 64}, "bad model description"),
    ({"kind": "variables", "model": MODEL, "image_size": [64, 64]}, "is missing: the checkpoint is incomplete"),
])
def test_bad_checkpoint_folders_are_named(tmp_path, payload, message):
    _meta(tmp_path / "ckpt", payload)
    with pytest.raises(CheckpointError, match=message) as error:
        load_bundle(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt") in str(error.value)


def test_unreadable_variables_are_named(tmp_path):
    _meta(tmp_path / "ckpt", {"kind": "variables", "model": MODEL, "image_size": [64, 64]})
    broken = tmp_path / "ckpt" / checkpoints.VARIABLES_DIR
    broken.mkdir()
    (broken / "junk").write_text("not an Orbax checkpoint")
    with pytest.raises(CheckpointError, match="cannot restore the variables") as error:
        load_bundle(tmp_path / "ckpt")
    assert str(broken) in str(error.value)


def test_auto_normalisation_follows_the_init_from_checkpoint(tmp_path):
    """Fine-tuning keeps the preprocessing the weights were trained with: "auto" takes the
    checkpoint's setting (and its encoder's BatchNorm epsilon), whatever kind it is."""
    from hanet_jax.train.init_from import resolve_model_config

    cfg = {"variant": "full", "input_normalization": "auto", "encoder_epsilon": 1.001e-5}
    for kind in ("encoder", "variables", "workdir"):
        _meta(tmp_path / kind, {"kind": kind, "image_size": [64, 64],
                                "model": {"input_normalization": "imagenet", "encoder_epsilon": 1e-5}})
        resolved = resolve_model_config(cfg, str(tmp_path / kind))
        assert resolved["input_normalization"] == "imagenet" and resolved["encoder_epsilon"] == 1e-5, kind
    _meta(tmp_path / "plain", {"kind": "variables", "image_size": [64, 64], "model": {"variant": "full"}})
    assert resolve_model_config(cfg, str(tmp_path / "plain"))["input_normalization"] == "none"
    assert resolve_model_config(cfg, "")["input_normalization"] == "none"
    explicit = {**cfg, "input_normalization": "none"}
    assert resolve_model_config(explicit, str(tmp_path / "variables"))["input_normalization"] == "none"
