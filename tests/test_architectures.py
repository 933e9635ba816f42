"""`config.model.architecture`: HA-Net and the three baselines through one builder, and every tool
(train.py, eval.py, predict.py, hanet-export, ensembles) on a baseline's workdir."""

from __future__ import annotations

import json

import numpy as np
import pytest

import _train_helpers as helpers
from data_fixtures import write_processed
from hanet_jax.models import ARCHITECTURES, model_config, model_from_config
from hanet_jax.models.hanet import HANet
from hanet_jax.train import config as config_utils


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_round_trips_through_its_config(name):
    model = model_from_config({"architecture": name, "dtype": "bfloat16"})
    assert type(model) is ARCHITECTURES[name]
    cfg = model_config(model)
    assert cfg["architecture"] == name and cfg["dtype"] == "bfloat16"
    assert model_from_config(json.loads(json.dumps(cfg))) == model  # as hanet.json holds it


def test_base_filters_zero_is_the_architectures_own_width():
    assert model_from_config({"architecture": "unet", "base_filters": 0}).base_filters == 64
    assert model_from_config({"architecture": "attention_unet", "base_filters": 0}).base_filters == 32
    assert model_from_config({"architecture": "unet_plus_plus", "base_filters": 8}).base_filters == 8


def test_a_hanet_json_from_before_the_key_is_hanet():
    old = {"variant": "no_tam", "upsampling": "nearest", "encoder_blocks": [6, 12, 24, 16]}
    assert model_from_config(old) == HANet(variant="no_tam")


def test_another_architectures_field_is_ignored_at_its_default_and_refused_otherwise():
    # A config's model section holds every architecture's fields, at their defaults.
    section = helpers.load_config("base").model.to_dict()
    section.update(architecture="unet", input_normalization="none")
    assert type(model_from_config(section)).__name__ == "UNet"
    with pytest.raises(ValueError, match=r"model.variant: not a field of model.architecture='unet'"):
        model_from_config({**section, "variant": "no_tam"})
    with pytest.raises(ValueError, match=r"model.base_filters: not a field of model.architecture='hanet'"):
        model_from_config({"base_filters": 16})
    with pytest.raises(ValueError, match=r"model.architecture must be one of"):
        model_from_config({"architecture": "segformer"})
    with pytest.raises(ValueError, match=r"unknown model config key\(s\): model.widht"):
        model_from_config({"architecture": "unet", "widht": 3})


@pytest.mark.parametrize("overrides,message", [
    ({"model.architecture": "unet", "model.variant": "no_tam"}, "config.model.variant: not a field"),
    ({"model.upsampling": "transpose"}, "config.model.upsampling must be 'nearest' or 'bilinear' for HA-Net"),
    ({"model.architecture": "unet", "init_scope": "encoder"}, "config.init_scope: 'encoder'"),
    ({"model.architecture": "vit"}, "config.model.architecture: must be one of"),
])
def test_the_config_check_names_the_key(overrides, message):
    config = helpers.load_config("base")
    config.data.root = "somewhere"
    config.update_from_flattened_dict(overrides)
    with pytest.raises(config_utils.ConfigError, match=message):
        config_utils.validate_config(config)


@pytest.mark.slow
def test_every_tool_takes_a_baselines_workdir(tmp_path):
    """A tiny U-Net trained by train.py's loop, then eval.py, predict.py, hanet-export and an
    ensemble of it with itself, all through the same code as HA-Net's."""
    from hanet_jax.eval import cli as eval_cli
    from hanet_jax.export import cli as export_cli
    from hanet_jax.inference import cli as predict_cli
    from hanet_jax.inference import ensemble
    from hanet_jax.train import loop as train_lib

    workdir = tmp_path / "unet"
    config = helpers.tiny_config(model__architecture="unet", model__base_filters=4,
                                 model__encoder_blocks=(6, 12, 24, 16))  # HA-Net's, unused
    result = train_lib.train_and_evaluate(config, str(workdir))
    assert result.summary["steps"] == 4 and np.isfinite(result.summary["final_train_loss"])
    meta = json.loads((workdir / "hanet.json").read_text())
    assert meta["model"] == {"architecture": "unet", "base_filters": 4, "upsampling": "nearest",
                             "dtype": "float32"}

    data = tmp_path / "data"
    write_processed(str(data), "test", n=3)
    assert eval_cli.main(["--checkpoint", str(workdir), "--data_dir", str(data), "--layout",
                          "processed", "--split", "test", "--protocol", "both",
                          "--out", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["model"]["architecture"] == "unet" and "variant" not in report["model"]
    assert predict_cli.main(["--checkpoint", str(workdir), "--input", str(data / "test" / "images"),
                             "--output", str(tmp_path / "masks")]) == 0
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["1.png", "2.png", "3.png"]
    assert export_cli.main(["--checkpoint", str(workdir), "--out", str(tmp_path / "exported"),
                            "--formats", "jax"]) == 0
    assert (tmp_path / "exported" / "model.jax").is_file()
    ensemble.write(tmp_path, ["unet", "unet"])
    assert eval_cli.main(["--checkpoint", str(tmp_path), "--data_dir", str(data), "--layout",
                          "processed", "--split", "test", "--out", str(tmp_path / "ens.json")]) == 0
