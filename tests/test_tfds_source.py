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
    """Folder A (processed layout) and B, and A prepared as hanet_processed/busi."""
    base = tmp_path_factory.mktemp("tfds_source")
    fx.write_processed(str(base / "A"), "train", n=20)
    fx.write_processed(str(base / "B"), "train", n=10, first_seed=100)
    data_dir = str(base / "tfds")
    tfds_builders.HanetProcessed(config="busi", data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(base / "A")))
    return {"a": str(base / "A"), "b": str(base / "B"), "data_dir": data_dir}


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
    for data in (alone.train, pipeline.source_of(joint.train, "a")):
        assert data.stems == folder.train.stems
        np.testing.assert_array_equal(data.images, folder.train.images)
        np.testing.assert_array_equal(data.masks, folder.train.masks)


def test_eval_reads_the_held_out_images_of_a_tfds_run(prepared, tmp_path):
    from hanet_jax.eval import evaluate

    data = train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/busi",
                                         tfds_data_dir=prepared["data_dir"]))
    (tmp_path / "data_split.json").write_text(json.dumps(data.split_record))
    examples, info = evaluate.run_split_examples(tmp_path, "test")
    assert [ex.stem for ex in examples] == data.split_record["test"]
    assert info["tfds"] == "hanet_processed/busi"
    assert set(info["groups"]) == set(data.split_record["test"])
    original = {ex.stem: ex for ex in check.require_valid(prepared["a"], "processed", "train")}
    for ex in examples:  # the same pixels as the original files
        np.testing.assert_array_equal(layouts.read_image(ex.image_path),
                                      layouts.read_image(original[ex.stem].image_path))


def test_tfds_source_errors_name_the_dataset_or_the_key(prepared, tmp_path):
    with pytest.raises(DatasetError, match=r"hanet_processed/udiat is not prepared under .*"
                                           r"download_and_prepare"):
        train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/udiat",
                                      tfds_data_dir=prepared["data_dir"]))
    with pytest.raises(DatasetError, match="unknown TFDS builder 'mnist'"):
        train_data.build_data(_config(source="tfds", tfds_name="mnist",
                                      tfds_data_dir=prepared["data_dir"]))
    with pytest.raises(DatasetError, match="no split 'test'"):
        train_data.build_data(_config(source="tfds", tfds_name="hanet_processed/busi",
                                      tfds_data_dir=prepared["data_dir"], split="test"))
    with pytest.raises(ConfigError, match=r"config\.data\.tfds_name: must name"):
        validate_config(_config(source="tfds"))
    joint = _config(source="folder")
    joint.data.sources.a = recipes.source(source="tfds")
    with pytest.raises(ConfigError, match=r"config\.data\.sources\.a\.tfds_name: must name"):
        validate_config(joint)
