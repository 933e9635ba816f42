"""A dataset prepared with our TFDS builders as a training source (config.data.source='tfds',
or one of config.data.sources): the same hold-outs and pixels as a run on the folder it was
prepared from, eval's --run_split on such a run, and errors that name the dataset."""

import json

import _train_helpers as helpers
import data_fixtures as fx
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from hanet_jax.data import check, layouts, pipeline, tfds_builders  # noqa: E402
from hanet_jax.data.layouts import DatasetError  # noqa: E402
from hanet_jax.train import input as train_data  # noqa: E402
from hanet_jax.train import recipes  # noqa: E402
from hanet_jax.train.config import ConfigError, validate_config  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Folder A (processed layout) and B, a Kaggle BUSI folder, and A prepared as
    hanet_processed/busi, the BUSI folder as hanet_busi/with_normal."""
    base = tmp_path_factory.mktemp("tfds_source")
    fx.write_processed(str(base / "A"), "train", n=20)
    fx.write_processed(str(base / "B"), "train", n=10, first_seed=100)
    fx.write_busi(str(base / "kaggle"), {"benign": 8, "malignant": 6, "normal": 3})
    data_dir = str(base / "tfds")
    for builder, folder in ((tfds_builders.HanetProcessed(config="busi", data_dir=data_dir), "A"),
                            (tfds_builders.HanetBusi(config="with_normal", data_dir=data_dir),
                             "kaggle")):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(base / folder)))
    return {"a": str(base / "A"), "b": str(base / "B"), "kaggle": str(base / "kaggle"),
            "data_dir": data_dir, "base": base}


def _config(**data):
    config = helpers.tiny_config()
    config.data.test_fraction, config.batch_size, config.data.group_by = 0.2, 4, "content"
    config.data.update(data)
    return config


def test_a_tfds_source_holds_out_and_decodes_what_its_folder_does(prepared):
    folder = train_data.build_data(_config(source="folder", root=prepared["a"]))
    alone = train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/busi",
                                          tfds_data_dir=prepared["data_dir"]))
    joint_config = _config(source="folder")
    joint_config.data.sources.a = recipes.source(
        source="tfds", tfds_name="hanet_processed/busi", tfds_data_dir=prepared["data_dir"],
        group_by="content")
    joint_config.data.sources.b = recipes.source(root=prepared["b"], group_by="content")
    joint = train_data.build_data(joint_config)
    for record in (alone.split_record, joint.split_record["sources"]["a"]):
        assert record["test"] and record["test"] == folder.split_record["test"]
        assert record["val"] == folder.split_record["val"]
        assert record["groups"] == folder.split_record["groups"]
        assert record["root"] == "tfds:hanet_processed/busi" and record["tfds_version"] == "1.0.0"
        assert record["tfds_data_dir"].startswith(prepared["data_dir"])
        assert len(record["tfds_sha256"]) == 64
    for data in (alone.train, pipeline.source_of(joint.train, "a")):
        assert data.stems == folder.train.stems
        np.testing.assert_array_equal(data.images, folder.train.images)
        np.testing.assert_array_equal(data.masks, folder.train.masks)


def test_a_kaggle_busi_tfds_source_keeps_its_classes_and_its_folders_split(prepared):
    folder = train_data.build_data(_config(source="folder", root=prepared["kaggle"], layout="busi",
                                           include_normal=True))
    data = train_data.build_data(_config(source="tfds", tfds_name="hanet_busi/with_normal",
                                         tfds_data_dir=prepared["data_dir"]))
    for key in ("val", "test", "groups"):
        assert data.split_record[key] == folder.split_record[key]
    assert data.split_record["layout"] == "busi" and data.split_record["include_normal"]
    assert data.train.stems == folder.train.stems
    np.testing.assert_array_equal(data.train.masks, folder.train.masks)


def test_eval_reads_the_held_out_images_of_a_tfds_run_and_refuses_other_data(prepared, tmp_path,
                                                                              monkeypatch):
    from hanet_jax.eval import evaluate

    monkeypatch.setenv("HOME", str(prepared["base"]))  # "~" in tfds_data_dir is expanded
    joint = _config(source="folder")
    joint.data.sources.a = recipes.source(source="tfds", tfds_name="hanet_processed",
                                          tfds_data_dir="~/tfds", group_by="content")
    joint.data.sources.b = recipes.source(root=prepared["b"], group_by="content")
    data = train_data.build_data(joint)
    record = data.split_record["sources"]["a"]
    assert record["tfds"] == "hanet_processed/busi"  # a bare name: its first config, named
    (tmp_path / "data_split.json").write_text(json.dumps(data.split_record))
    examples, info = evaluate.run_split_examples(tmp_path, "test", source="a")
    assert [ex.stem for ex in examples] == record["test"]
    assert info["tfds"] == "hanet_processed/busi" and set(info["groups"]) == set(record["test"])
    original = {ex.stem: ex for ex in check.require_valid(prepared["a"], "processed", "train")}
    for ex in examples:  # the same pixels as the original files
        np.testing.assert_array_equal(layouts.read_image(ex.image_path),
                                      layouts.read_image(original[ex.stem].image_path))
    record["tfds_sha256"] = "0" * 64  # as if the dataset had been prepared again from other files
    (tmp_path / "data_split.json").write_text(json.dumps(data.split_record))
    with pytest.raises(evaluate.EvalError, match="not the images it held out"):
        evaluate.run_split_examples(tmp_path, "test", source="a")


def test_tfds_source_errors_name_the_dataset_or_the_key(prepared, tmp_path):
    with pytest.raises(DatasetError, match=r"config\.data\.tfds_name=hanet_processed/udiat.*"
                                           r"hanet_processed/udiat 1\.0\.0 is not prepared under "
                                           r".*download_and_prepare"):
        train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/udiat",
                                      tfds_data_dir=prepared["data_dir"]))
    with pytest.raises(DatasetError, match="unknown TFDS builder 'mnist'"):
        train_data.build_data(_config(source="tfds", tfds_name="mnist",
                                      tfds_data_dir=prepared["data_dir"]))
    joint = _config(source="folder")
    joint.data.sources.a = recipes.source(source="tfds", tfds_name="hanet_udiat",
                                          tfds_data_dir=prepared["data_dir"])
    with pytest.raises(DatasetError, match=r"config\.data\.sources\.a: .*hanet_udiat/dataset_b "
                                           r"1\.0\.0 is not prepared"):
        train_data.build_data(joint)
    with pytest.raises(DatasetError, match="no split 'test'"):
        train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/busi",
                                      tfds_data_dir=prepared["data_dir"], split="test"))
    with pytest.raises(ConfigError, match=r"config\.data\.tfds_name: must name"):
        validate_config(_config(source="tfds"))
    joint = _config(source="folder")
    joint.data.sources.a = recipes.source(source="tfds")
    with pytest.raises(ConfigError, match=r"config\.data\.sources\.a\.tfds_name: must name"):
        validate_config(joint)
