"""Data packs (hanet_jax.data.pack): one .npz of a release's originals with the project's split.

The fixture is a tiny processed-release folder in BUSI's numbering: originals 1..12 (benign) and
440..451 (malignant), each with a flipped copy i + 647 and an identical one i + 1294.
"""

import json
import os

import numpy as np
import pytest

import _train_helpers as helpers
import data_fixtures
from hanet_jax.data import audit, layouts, pipeline
from hanet_jax.data import pack as data_pack
from hanet_jax.data.layouts import DatasetError
from hanet_jax.data.splits import DATA_SPLIT_FILE
from hanet_jax.train import input as train_data
from hanet_jax.train.config import ConfigError

ORIGINALS = [*range(1, 13), *range(440, 452)]
SIZE = 32  # the tiny training config's image size


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """DATA_ROOT holding BUSI/train in the release's numbering (3 files per original)."""
    root = tmp_path_factory.mktemp("release")
    train = root / "BUSI" / "train"
    for i in ORIGINALS:
        image, mask = data_fixtures.make_pair(i, 64, 64)
        copies = [(image, mask), (np.fliplr(image), np.fliplr(mask)), (image, mask)]
        for k, (im, m) in enumerate(copies):
            data_fixtures.save_image(str(train / "images" / f"{i + 647 * k}.jpg"),
                                     np.ascontiguousarray(im), "RGB")
            data_fixtures.save_mask(str(train / "masks" / f"{i + 647 * k}.png"),
                                    np.ascontiguousarray(m))
    return root


@pytest.fixture(scope="module")
def packed(release, tmp_path_factory):
    """The fixture packed at 32x32 with configs/busi.py's split keys (and the 0.2 test
    hold-out of scripts/reproduce.sh): (path, metadata)."""
    out = tmp_path_factory.mktemp("pack") / "busi.npz"
    return out, data_pack.write_pack(release, out, "busi", SIZE)


# configs/busi.py's split keys with reproduce.sh's test hold-out, as the pack records them.
SPLIT = {"data__group_by": "processed_release", "data__release": "busi",
         "data__test_fraction": 0.2}


def _folder_config(release, **overrides):
    return helpers.tiny_config(**{"data__source": "folder", "data__root": str(release / "BUSI"),
                                  **SPLIT, **overrides})


def _pack_config(path, **overrides):
    return helpers.tiny_config(**{"data__source": "pack", "data__pack": str(path), **SPLIT,
                                  **overrides})


def _originals(stems):
    return {audit.release_original(s, "busi") for s in stems}


def test_pack_holds_each_original_once_on_the_folder_runs_side(release, packed):
    path, meta = packed
    pack = data_pack.read_pack(path)
    assert pack.stems == tuple(str(i) for i in ORIGINALS)  # no copies
    assert meta["n_files"] == 3 * len(ORIGINALS) and meta["bytes"] == os.path.getsize(path)
    assert meta["split"] == {"seed": 0, "val_split": "grouped", "val_fraction": 0.2,
                             "test_fraction": 0.2, "folds": 0, "group_by": "processed_release",
                             "release": "busi"}
    assert pack.classes == ("benign",) * 12 + ("malignant",) * 12
    assert pack.images.shape == (24, SIZE, SIZE, 3) and pack.masks.shape == (24, SIZE, SIZE, 1)
    assert set(np.unique(pack.masks)) <= {0, 1}
    # The same sides as a folder run of the same split keys, copies mapped to their originals.
    folder = train_data.build_data(_folder_config(release))
    sides = dict(zip(pack.stems, pack.sides))
    for side, stems in (("val", folder.split_record["val"]), ("test", folder.split_record["test"]),
                        ("train", folder.train.stems)):
        assert {s for s, v in sides.items() if v == side} == _originals(stems), side
        groups = dict(zip(pack.stems, pack.groups))
        assert side == "train" or all(groups[audit.release_original(s, "busi")]
                                      == folder.split_record["groups"][s] for s in stems)
    assert {"train", "val", "test"} == set(pack.sides) and meta["counts"]["test"] >= 2
    # Pixels: the project's resize of each original's file, within the JPEG error recorded.
    ex = layouts.list_examples(str(release / "BUSI"), "processed", "train")[0]
    image, mask = pipeline.resize_pair(layouts.read_image(ex.image_path),
                                       layouts.read_mask(ex.mask_paths), SIZE)
    error = np.abs(pack.images[0].astype(int) - image)
    err = meta["compression_error"]
    assert error.max() <= err["max_abs"] <= 16 and err["mean_abs"] < 3
    np.testing.assert_array_equal(pack.masks[0], mask)


def test_command_prints_size_counts_and_compression_error(release, tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert data_pack.main([str(release), str(out), "--dataset", "busi", "--size", "64",
                           "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and " MB, 24 originals of 72 files" in printed
    assert "seed=3" in printed and "largest absolute difference" in printed
    assert data_pack.read_pack(out).meta["split"]["seed"] == 3
    with pytest.raises(SystemExit) as usage:  # --dataset is required
        data_pack.main([str(release), str(out), "--size", "64"])
    assert usage.value.code == 2
    # Lossless: the exact resized pixels.
    assert data_pack.main([str(release), str(out), "--dataset", "busi", "--size", "64",
                           "--image_codec", "png"]) == 0
    assert "PNG (lossless); vs the uncompressed resized pixels: largest absolute difference 0, " \
        "mean 0.000" in capsys.readouterr().out


def test_folds_record_each_originals_fold_as_a_folder_run_splits_them(release, tmp_path):
    out = tmp_path / "cv.npz"
    data_pack.write_pack(release, out, "busi", SIZE, split={"folds": 2})
    pack = data_pack.read_pack(out)
    cv = np.array(pack.sides) == "cv"
    assert set(pack.sides) == {"test", "cv"} and set(pack.folds[cv]) == {0, 1}
    assert set(pack.folds[~cv]) == {-1}
    folder = train_data.build_data(_folder_config(release, data__folds=2, data__fold=1))
    sides = pack.sides_of_fold(1)
    assert {s for s, v in zip(pack.stems, sides) if v == "val"} == _originals(
        folder.split_record["val"])
    run = train_data.build_data(_pack_config(out, data__folds=2, data__fold=1))
    assert set(run.val.stems) == _originals(folder.split_record["val"])
    with pytest.raises(ConfigError, match=r"config.data.fold=2: .*cv.npz holds folds 0..1"):
        train_data.build_data(_pack_config(out, data__folds=2, data__fold=2))


def test_pack_data_source_checks_the_split_keys_and_resizes(packed):
    path, _ = packed
    pack = data_pack.read_pack(path)
    data = train_data.build_data(_pack_config(path, model__image_size=64))
    assert data.train.images.shape[1:] == (64, 64, 3)
    assert set(data.train.stems) == {s for s, v in zip(pack.stems, pack.sides) if v == "train"}
    assert data.split_record["pack"] == str(path) and data.split_record["test"]
    for key, value in (("test_fraction", 0.0), ("seed", 1), ("val_fraction", 0.3),
                       ("folds", 2), ("group_by", "content")):
        config = _pack_config(path, **{f"data__{key}": value})
        with pytest.raises(ConfigError, match=rf"config\.data\.{key}=.*{path}"):
            train_data.build_data(config)


@pytest.mark.slow
def test_one_epoch_from_the_pack_then_eval_of_its_test_split(packed, tmp_path):
    import eval as eval_cli
    from hanet_jax.train import loop as train_lib

    path, meta = packed
    workdir = tmp_path / "w"
    result = train_lib.train_and_evaluate(_pack_config(path, num_epochs=1), str(workdir))
    assert np.isfinite(result.summary["final_train_loss"])
    record = json.loads((workdir / DATA_SPLIT_FILE).read_text())
    pack = data_pack.read_pack(path)
    assert record["pack"] == str(path) and record["pack_sha256"] == pack.sha256
    assert record["test"] == [s for s, v in zip(pack.stems, pack.sides) if v == "test"]
    out = tmp_path / "test.json"
    assert eval_cli.main(["--checkpoint", str(workdir), "--run_split", "test",
                          "--threshold_from_split", "val", "--bootstrap", "10",
                          "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_images"] == meta["counts"]["test"] and report["data"]["pack"] == str(path)
    assert report["protocols"]["fixed"]["threshold_selection"]["n_images"] == meta["counts"]["val"]
    assert report["bootstrap"]["over"] == "near-duplicate groups"
    assert report["protocols"]["fixed"]["strata"]["class_source"].startswith("BUSI release")


def test_damaged_missing_or_foreign_files_are_named(packed, tmp_path):
    path, _ = packed
    raw = path.read_bytes()
    half = len(raw) // 2
    cases = {
        "missing.npz": None,
        "truncated.npz": raw[:half],
        "garbage.npz": b"not a pack at all" * 10,
        "flipped.npz": raw[:half] + bytes([raw[half] ^ 0xFF]) + raw[half + 1:],  # a CRC error
    }
    for name, data in cases.items():
        target = tmp_path / name
        if data is not None:
            target.write_bytes(data)
        with pytest.raises(DatasetError, match=rf"{target}: .*"):
            data_pack.read_pack(target)
    # Another format version, and an .npz that is not a pack.
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format_version": 99}).encode(), np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(DatasetError, match=r"v99.npz: pack format version 99; .* reads version 1"):
        data_pack.read_pack(tmp_path / "v99.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match=r"other.npz: not a data pack: no meta"):
        data_pack.read_pack(tmp_path / "other.npz")
    with pytest.raises(DatasetError, match=r"missing.npz: pack file not found"):
        train_data.build_data(_pack_config(tmp_path / "missing.npz"))


def test_a_pack_over_the_limit_is_refused_and_not_written(release, tmp_path):
    out = tmp_path / "big.npz"
    with pytest.raises(DatasetError, match=rf"{out}: the pack would be .* MB, over the 0.001 MB "
                                           r"limit; not written"):
        data_pack.write_pack(release, out, "busi", SIZE, max_mb=0.001)
    assert not out.exists()
    assert data_pack.main([str(release), str(out), "--dataset", "busi", "--max_mb", "0.001"]) == 2
    with pytest.raises(DatasetError, match=rf"{release / 'UDIAT'}: dataset folder does not exist"):
        data_pack.write_pack(release, out, "udiat", SIZE)


@pytest.mark.parametrize("dataset", ["busi", "udiat"])
def test_default_split_is_the_dataset_recipes_with_the_project_test_hold_out(dataset):
    from hanet_jax.train import recipes

    data = recipes.dataset_recipe(dataset).data
    want = {key: data[key] for key in data_pack.SPLIT_KEYS}
    want["test_fraction"] = data_pack.PROJECT_TEST_FRACTION  # reproduce.sh's hold-out
    assert data_pack.default_split(dataset) == want
