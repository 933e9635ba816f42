"""Readers, validation, the checker CLI and the TFDS builders, on tiny fixture folders."""

import os
import subprocess
import sys

import data_fixtures as fx
import numpy as np
import pytest

from hanet_jax.data import check, layouts
from hanet_jax.data.layouts import DatasetError


def _problems(report, severity="error"):
    """{file name: message} of one severity."""
    return {os.path.basename(p.path): p.message for p in report.problems if p.severity == severity}


def test_natural_sort_orders_numbers():
    stems = ["10", "2", "1", "benign (10)", "benign (9)"]
    assert sorted(stems, key=layouts.natural_key) == ["1", "2", "10", "benign (9)", "benign (10)"]


def test_processed_layout_pairs_and_sorts(tmp_path):
    pairs = fx.write_processed(str(tmp_path), n=11, image_ext=".jpg", mask_ext=".tif",
                               image_mode="RGB", mask_style="bool")
    examples = layouts.list_examples(str(tmp_path), "processed", "train")
    assert [e.stem for e in examples] == [str(i) for i in range(1, 12)]
    assert all(e.label is None and len(e.mask_paths) == 1 for e in examples)
    np.testing.assert_array_equal(layouts.read_mask(examples[0].mask_paths), pairs["1"][1])
    assert layouts.read_image(examples[0].image_path).shape == (fx.HEIGHT, fx.WIDTH, 3)


def test_processed_layout_accepts_masks_under_images(tmp_path):
    fx.write_processed(str(tmp_path), "test", n=3, masks_under_images=True)
    examples = layouts.list_examples(str(tmp_path), "processed", "test")
    assert [os.path.basename(os.path.dirname(e.mask_paths[0])) for e in examples] == ["masks"] * 3
    assert all(os.path.dirname(os.path.dirname(e.mask_paths[0])).endswith("images")
               for e in examples)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_read_image_modes_give_rgb_uint8(tmp_path, mode):
    grey, _ = fx.make_pair(1)
    path = fx.save_image(str(tmp_path / "x.png"), grey, mode)
    image = layouts.read_image(path)
    assert image.dtype == np.uint8 and image.shape == grey.shape + (3,)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey)


@pytest.mark.parametrize("style,ext", [("bool", ".png"), ("bool", ".tif"), ("01", ".png"),
                                       ("0255", ".png"), ("rgb", ".png"), ("rgba", ".png")])
def test_read_mask_styles(tmp_path, style, ext):
    _, mask = fx.make_pair(2)
    path = fx.save_mask(str(tmp_path / f"m{ext}"), mask, style)
    out = layouts.read_mask(path)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(layouts.read_mask(path, binarize=False), mask)


def test_read_mask_non_binary(tmp_path):
    _, mask = fx.make_pair(3)
    path = fx.save_mask(str(tmp_path / "m.png"), mask, "gray")
    np.testing.assert_array_equal(layouts.read_mask(path), mask)
    with pytest.raises(DatasetError, match="m.png: mask is not binary"):
        layouts.read_mask(path, binarize=False)


def test_busi_layout_labels_and_multi_mask_or(tmp_path):
    written = fx.write_busi(str(tmp_path))
    examples = layouts.list_examples(str(tmp_path), "busi")
    assert [e.stem for e in examples] == ["benign (1)", "benign (2)", "benign (3)",
                                          "malignant (1)", "malignant (2)"]
    assert [e.label for e in examples] == ["benign"] * 3 + ["malignant"] * 2
    multi = examples[1]
    assert [os.path.basename(p) for p in multi.mask_paths] == [
        "benign (2)_mask.png", "benign (2)_mask_1.png", "benign (2)_mask_2.png"]
    np.testing.assert_array_equal(layouts.read_mask(multi.mask_paths), written["benign (2)"][1])
    with_normal = layouts.list_examples(str(tmp_path), "busi", include_normal=True)
    assert [e.label for e in with_normal].count("normal") == 1
    with pytest.raises(DatasetError, match="no split folders"):
        layouts.list_examples(str(tmp_path), "busi", "test")


def test_udiat_layout(tmp_path):
    written = fx.write_udiat(str(tmp_path), n=3)
    examples = layouts.list_examples(str(tmp_path), "udiat")
    assert [e.stem for e in examples] == ["000001", "000002", "000003"]
    np.testing.assert_array_equal(layouts.read_mask(examples[2].mask_paths), written["000003"][1])


def test_validate_reports_every_defect(tmp_path):
    root = str(tmp_path)
    fx.write_processed(root, n=8, mask_style="01")
    images, masks = tmp_path / "train" / "images", tmp_path / "train" / "masks"
    fx.truncate(str(images / "1.png"))                                   # corrupt PNG
    fx.save_image(str(images / "2.jpg"), fx.make_pair(9)[0], "RGB")      # JPEG...
    os.remove(images / "2.png")
    fx.truncate(str(images / "2.jpg"), 0.8)                              # ...truncated
    os.remove(masks / "3.png")                                           # image without mask
    fx.save_mask(str(masks / "99.png"), fx.make_pair(4)[1])              # mask without image
    fx.save_mask(str(masks / "5.png"), fx.make_pair(5, 20, 20)[1])       # size mismatch
    fx.save_mask(str(masks / "6.png"), fx.make_pair(6)[1], "gray")       # non-binary
    fx.truncate(str(masks / "7.png"), 0.6)                               # corrupt mask

    report = check.validate(root, "processed", "train")
    errors = _problems(report)
    assert set(errors) == {"1.png", "2.jpg", "3.png", "99.png", "5.png", "7.png"}
    assert "corrupt" in errors["1.png"] and "corrupt" in errors["2.jpg"]
    assert errors["3.png"] == "image has no mask" and errors["99.png"] == "mask has no image"
    assert "differs from image 48x40" in errors["5.png"]
    assert "not binary" in _problems(report, "warning")["6.png"]
    assert not report.ok and len(report.examples) == 7

    strict = check.validate(root, "processed", "train", binarize_masks=False)
    assert "6.png" in _problems(strict)

    with pytest.raises(DatasetError) as info:
        check.require_valid(root, "processed", "train")
    for name in errors:
        assert name in str(info.value)


def test_validate_empty_and_missing_folders(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir()
    report = check.validate(str(tmp_path), "processed", "train")
    assert all("empty folder" in p.message for p in report.errors) and len(report.errors) == 2
    missing = check.validate(str(tmp_path), "processed", "val")
    assert [p.message for p in missing.errors] == ["missing folder"]
    assert missing.errors[0].path.endswith("val")
    busi = check.validate(str(tmp_path / "nothing"), "busi")
    assert [p.message for p in busi.errors] == ["missing folder"]


def test_validate_clean_folders(tmp_path):
    fx.write_busi(str(tmp_path / "busi"))
    report = check.validate(str(tmp_path / "busi"), "busi", include_normal=True)
    assert report.ok and not report.warnings and report.num_empty_masks == 1
    fx.write_udiat(str(tmp_path / "udiat"))
    assert check.require_valid(str(tmp_path / "udiat"), "udiat")[0].stem == "000001"


def test_cli_exit_codes(tmp_path, capsys):
    fx.write_processed(str(tmp_path), n=3)
    assert check.main([str(tmp_path), "--layout", "processed", "--split", "train"]) == 0
    assert "3 pairs" in capsys.readouterr().out
    os.remove(tmp_path / "train" / "masks" / "2.png")
    assert check.main([str(tmp_path)]) == 1
    assert "2.png: image has no mask" in capsys.readouterr().out
    assert check.main([str(tmp_path), "--layout", "udiat", "--split", "test"]) == 2
    # The real entry point, once, through the interpreter.
    result = subprocess.run([sys.executable, "-m", "hanet_jax.data.check", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "image has no mask" in result.stdout


def test_tfds_builders_prepare_and_read(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from hanet_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top

    manual = tmp_path / "release" / "BUSI"
    written = fx.write_processed(str(manual), "train", n=3, image_ext=".jpg", mask_ext=".tif",
                                 image_mode="RGB", mask_style="bool")
    fx.write_processed(str(manual), "test", n=2, masks_under_images=True, first_seed=50)
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "release"))
    builder = tfds_builders.HanetProcessed(config="busi", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=config)
    assert set(builder.info.splits) == {"train", "test"}
    decoded = tfds_builders.decoded_from_tfds(builder.as_dataset(split="train"), (fx.HEIGHT,
                                                                                   fx.WIDTH))
    assert decoded.stems == ("1", "2", "3")
    np.testing.assert_array_equal(decoded.masks[1, ..., 0], written["2"][1])
    assert len(list(builder.as_dataset(split="test"))) == 2

    fx.write_busi(str(tmp_path / "busi"))
    busi = tfds_builders.HanetBusi(config="with_normal", data_dir=str(tmp_path / "tfds"))
    busi.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "busi")))
    labels = sorted(r["label"].decode() for r in tfds.as_numpy(busi.as_dataset(split="train")))
    assert labels == ["benign"] * 3 + ["malignant"] * 2 + ["normal"]


def test_tfds_builder_reports_all_problems(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from hanet_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top

    fx.write_udiat(str(tmp_path / "udiat"), n=3)
    os.remove(tmp_path / "udiat" / "GT" / "000002.png")
    fx.truncate(str(tmp_path / "udiat" / "original" / "000003.png"))
    builder = tfds_builders.HanetUdiat(data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DatasetError, match=r"(?s)000002.png: image has no mask.*000003.png"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "udiat")))


@pytest.mark.skipif(not os.environ.get("HANET_DATA_DIR"), reason="HANET_DATA_DIR not set")
@pytest.mark.parametrize("dataset", ["BUSI", "UDIAT"])
def test_real_processed_data(dataset):
    root = os.path.join(os.environ["HANET_DATA_DIR"], "hanet-processed", dataset)
    if not os.path.isdir(root):
        pytest.skip(f"{root} not present")
    examples = layouts.list_examples(root, "processed", "train")
    assert len(examples) > 100
    for example in examples[:: len(examples) // 8]:
        assert check.check_image_file(example.image_path) == (256, 256)
        image, mask = layouts.read_image(example.image_path), layouts.read_mask(example.mask_paths,
                                                                                binarize=False)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert mask.shape == (256, 256) and mask.any()
