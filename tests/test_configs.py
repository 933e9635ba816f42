"""Every config builds and validates; bad keys, values and data fail early, naming the culprit;
the smoke config trains (shared reference run); the launch commands and flag overrides work."""

import re
import subprocess
import sys
import time

import numpy as np
import pytest

import _train_helpers as helpers
import data_fixtures
from hanet_jax.train import recipes
from hanet_jax.train import config as config_utils
from hanet_jax.train import input as train_data
from hanet_jax.train import loop as train_lib
from hanet_jax.data.layouts import DatasetError

CONFIGS = ("base", "default", "smoke", "busi", "udiat", "joint")
LAUNCHABLE = CONFIGS[1:]


def _with_root(config, root="/some/data"):
    if config.data.source == "folder":
        config.data.root = root
    for name, source in config.data.sources.items():
        source.root = f"{root}/{name.upper()}"
    return config


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_and_has_exactly_the_schema_keys(name):
    config = _with_root(helpers.load_config(name))
    keys = set(config_utils.flatten(config.to_dict()))
    sources = {k for k in keys if k.startswith("data.sources.")}
    assert keys - sources == set(config_utils.RULES)
    assert {k.rsplit(".", 1)[1] for k in sources} <= set(config_utils.SOURCE_RULES)
    assert bool(sources) == (name == "joint")
    config_utils.validate_config(config)


@pytest.mark.parametrize("name", LAUNCHABLE)
def test_every_config_docstring_holds_its_launch_command(name):
    text = (helpers.ROOT / "configs" / f"{name}.py").read_text()
    assert f"python train.py --config=configs/{name}.py --workdir=" in text


@pytest.mark.parametrize("name", ("busi", "udiat"))
def test_release_profile_holds_the_release_recipe(name):
    c = helpers.load_config(name, "release")
    assert (c.model.image_size, c.batch_size, c.num_epochs, c.loss) == (256, 32, 155, "bce_jaccard")
    o = c.optimizer
    assert (o.learning_rate, o.eps, o.plateau_factor, o.plateau_patience, o.plateau_min_delta,
            o.min_lr) == (1e-3, 1e-9, 0.25, 4, 1e-4, 1e-9)
    assert (o.early_stopping_patience, o.early_stopping_min_delta) == (9, 1e-3)
    assert c.data.augment.hflip and not (c.data.augment.vflip or c.data.augment.affine)
    assert not (c.data.augment.brightness_contrast or c.data.augment.speckle)
    assert o.schedule == "plateau"
    assert (c.data.val_split, c.data.val_fraction, c.data.release) == ("grouped", 0.2, name)


@pytest.mark.parametrize("name", ("busi", "udiat"))
def test_defaults_differ_from_the_release_by_the_kept_changes_only(name):
    default = config_utils.flatten(helpers.load_config(name).to_dict())
    release = config_utils.flatten(helpers.load_config(name, "release").to_dict())
    assert {k for k in default if default[k] != release[k]} == set(recipes.BEYOND_RELEASE)
    both = config_utils.flatten(helpers.load_config(name, "release,cpu2h").to_dict())
    assert both == {**release, **recipes.CPU_2H}


@pytest.mark.parametrize("name", ("busi", "udiat"))
def test_cpu2h_profile_changes_only_its_keys(name):
    base = config_utils.flatten(helpers.load_config(name).to_dict())
    cpu = _with_root(helpers.load_config(name, "cpu2h"))
    config_utils.validate_config(cpu)
    changed = {k for k, v in config_utils.flatten(cpu.to_dict()).items() if base[k] != v}
    assert changed == set(recipes.CPU_2H) | {"data.root"}
    assert cpu.model.image_size == 128 and cpu.num_epochs == 20
    cv = config_utils.flatten(helpers.load_config(name, "cpu2h,cv").to_dict())
    assert cv == {**config_utils.flatten(cpu.to_dict()), "data.root": "", **recipes.CV_RUN}
    assert cv["num_epochs"] == 10 and cv["data.folds"] == 0  # reproduce.sh sets the folds
    with pytest.raises(ValueError, match="unknown config profile 'gpu'"):
        helpers.load_config(name, "gpu")


@pytest.mark.slow
def test_smoke_config_trains(tmp_path_factory):
    """train_and_evaluate on the smoke config (at 32x32, shared with the other training tests)."""
    summary = helpers.reference_run(tmp_path_factory)["summary"]
    assert summary["epochs"] == 2 and np.isfinite(summary["best_val_loss"])
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    assert losses[1] < losses[0], losses  # it learns


def test_unknown_and_bad_values_name_the_key():
    config = helpers.load_config("smoke")
    config.unlock()
    config.model.vairant = "full"
    with pytest.raises(config_utils.ConfigError, match=r"config\.model\.vairant"):
        config_utils.validate_config(config)
    config = helpers.load_config("smoke")
    config.batch_size, config.model.image_size, config.loss = 0, 48, "dice"
    config.optimizer.weight_decay = -1e-4
    with pytest.raises(config_utils.ConfigError) as error:
        config_utils.validate_config(config)
    for key in ("config.batch_size", "config.model.image_size", "config.loss",
                "config.optimizer.weight_decay"):
        assert key in str(error.value)
    config = helpers.load_config("busi")
    with pytest.raises(config_utils.ConfigError, match=r"config\.data\.root"):
        config_utils.validate_config(config)


@pytest.mark.parametrize("folds, fold, val_split, key", [
    (1, 0, "grouped", "config.data.folds: 0 (no cross-validation) or at least 2"),
    (5, 5, "grouped", "config.data.fold: must be below config.data.folds=5"),
    (0, 2, "grouped", "config.data.fold: needs config.data.folds >= 2"),
    (5, 0, "release", "config.data.folds: needs config.data.val_split='grouped'"),
])
def test_cross_validation_keys_are_checked(folds, fold, val_split, key):
    config = helpers.load_config("smoke")
    config.data.folds, config.data.fold, config.data.val_split = folds, fold, val_split
    with pytest.raises(config_utils.ConfigError, match=re.escape(key)):
        config_utils.validate_config(config)
    config.data.folds, config.data.fold, config.data.val_split = 5, 4, "grouped"
    config_utils.validate_config(config)


def test_missing_or_invalid_dataset_fails_before_any_work(tmp_path):
    config = helpers.tiny_config(data__source="folder", data__root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere"):
        train_lib.train_and_evaluate(config, str(tmp_path / "w1"))
    data_fixtures.write_processed(str(tmp_path / "data"), n=6)
    (tmp_path / "data" / "train" / "masks" / "3.png").unlink()
    config.data.root = str(tmp_path / "data")
    with pytest.raises(DatasetError, match=r"3\.png"):
        train_lib.train_and_evaluate(config, str(tmp_path / "w2"))
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


@pytest.mark.parametrize("val_split", ("grouped", "release"))
def test_folder_data_from_the_busi_config(tmp_path, val_split):
    data_fixtures.write_processed(str(tmp_path), n=10)
    config = helpers.load_config("busi")
    config.data.root, config.data.val_split, config.model.image_size = str(tmp_path), val_split, 32
    config.batch_size = 4
    data = train_data.build_data(config, str(tmp_path / "work"))
    assert len(data.train) + len(data.val) == 10 and data.train.image_size == (32, 32)
    assert not set(data.train.stems) & set(data.val.stems)
    if val_split == "release":  # the first 20% of the sorted file names: "1.png", "10.png"
        assert data.val.stems == ("1", "10")
    assert data.augment.hflip and not data.augment.vflip


def _train_py(*args, timeout=120):
    return subprocess.run([sys.executable, str(helpers.ROOT / "train.py"), *args],
                          env=helpers.subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=helpers.ROOT)


def test_train_py_rejects_unknown_override_keys_and_bad_values(tmp_path):
    proc = _train_py("--config=configs/smoke.py", f"--workdir={tmp_path}",
                     "--config.model.vairant=full")
    assert proc.returncode != 0 and "config.model.vairant" in proc.stderr
    proc = _train_py("--config=configs/smoke.py", f"--workdir={tmp_path}",
                     "--config.batch_size=eight")
    assert proc.returncode != 0 and "--config.batch_size" in proc.stderr
    proc = _train_py("--config=configs/smoke.py", f"--workdir={tmp_path}", "--config.batch_size=0")
    assert proc.returncode == 2 and "config.batch_size" in proc.stderr and "Traceback" not in proc.stderr


def test_train_py_fails_fast_on_a_missing_dataset(tmp_path):
    start = time.time()
    proc = _train_py("--config=configs/busi.py", f"--workdir={tmp_path / 'w'}",
                     f"--config.data.root={tmp_path / 'no_such_data'}")
    assert proc.returncode == 2 and "no_such_data" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists() and time.time() - start < 60
