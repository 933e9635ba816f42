"""Near-duplicate audit (fingerprints, similarity, grouping, CLI) and leak-free splits."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanet_jax.data import audit, layouts, splits, synthetic

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(image, quality=70):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _rescaled(image, size):
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def _shifted(image, dy, dx):
    """Moved by (dy, dx) pixels, the uncovered border repeating the edge (as a re-crop would)."""
    pad = np.pad(image, ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return pad[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


COPIES = {
    "hflip": lambda im: im[:, ::-1],
    "vflip": lambda im: im[::-1],
    "shift_1px": lambda im: _shifted(im, 1, -1),
    "shift_3px": lambda im: _shifted(im, 3, 0),
    "jpeg": _jpeg,
    "rescaled": lambda im: _rescaled(im, 96),
}


@pytest.fixture(scope="module")
def phantoms():
    images, _ = synthetic.make_phantoms(10, size=64, seed=7)
    return images


def test_finds_copies_and_not_unrelated_phantoms(phantoms):
    originals = audit.fingerprints(phantoms)
    copies = audit.fingerprints([make(phantoms[i]) for i, make in enumerate(COPIES.values())])
    pairs = audit.near_duplicate_pairs(copies, originals)
    assert [(i, j) for i, j, _ in pairs] == [(i, i) for i in range(len(COPIES))]
    assert all(score > 0.97 for *_, score in pairs)
    assert audit.near_duplicate_pairs(originals) == []  # distinct phantoms are not duplicates
    assert audit.similarity_matrix(originals)[~np.eye(10, dtype=bool)].max() < 0.9


def test_fingerprint_accepts_grey_rgb_rgba_and_paths(phantoms, tmp_path):
    rgb = phantoms[0]
    grey = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], axis=-1)
    path = tmp_path / "g.png"
    Image.fromarray(grey).save(path)
    fps = audit.fingerprints([rgb, grey, grey[..., None], rgba, path, str(path)])
    assert fps.shape == (6, 48, 48) and fps.dtype == np.float32
    np.testing.assert_allclose(fps, np.broadcast_to(fps[0], fps.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fps[0]), 1, atol=1e-5)
    assert abs(fps[0].mean()) < 1e-6
    with pytest.raises(layouts.DatasetError, match="missing.png"):
        audit.fingerprints([tmp_path / "missing.png"])


def test_unsmoothed_fingerprint_is_the_specs_definition(phantoms):
    grey = phantoms[0].astype(np.float64) @ [0.299, 0.587, 0.114]
    small = Image.fromarray(grey.astype(np.float32)).resize((48, 48), Image.Resampling.BOX)
    small = np.asarray(small)
    small = small - small.mean()
    np.testing.assert_allclose(
        audit.fingerprint(phantoms[0], smooth=0), small / np.linalg.norm(small), atol=1e-5
    )


def test_pruned_pairs_equal_the_full_similarity_matrix(phantoms):
    fps = audit.fingerprints(list(phantoms) + [m(phantoms[3]) for m in COPIES.values()])
    full = audit.similarity_matrix(fps)
    np.testing.assert_allclose(full, full.T, atol=1e-5)
    np.testing.assert_allclose(np.diag(full), 1, atol=1e-5)
    for threshold in (0.95, 0.5):  # 0.5 lets many unrelated pairs through the bound
        expected = [(i, j) for i, j in zip(*np.nonzero(np.triu(full >= threshold, 1)))]
        got = audit.near_duplicate_pairs(fps, threshold=threshold)
        assert [(i, j) for i, j, _ in got] == expected
        np.testing.assert_allclose([s for *_, s in got], full[tuple(zip(*expected))], atol=1e-4)
    cross = audit.near_duplicate_pairs(fps[:12], fps[8:], threshold=0.5)
    sub = full[:12, 8:]
    assert [(i, j) for i, j, _ in cross] == list(zip(*np.nonzero(sub >= 0.5)))


def test_flips_and_shift_options(phantoms):
    fps = audit.fingerprints([phantoms[0], phantoms[0][::-1], _shifted(phantoms[0], 6, 0)])
    assert audit.similarity_matrix(fps[:1], fps[1:2], flips=("h",))[0, 0] < 0.9
    assert audit.similarity_matrix(fps[:1], fps[1:2])[0, 0] > 0.99  # "v" is on by default
    small = audit.similarity_matrix(fps[:1], fps[2:], max_shift=0)[0, 0]
    assert audit.similarity_matrix(fps[:1], fps[2:], max_shift=5)[0, 0] > small
    with pytest.raises(ValueError, match="unknown flips"):
        audit.similarity_matrix(fps, flips=("d",))


def test_grouping_is_connected_components():
    assert audit.connected_components(6, [(4, 5, 0.99), (1, 3), (3, 5)]) == [0, 1, 2, 1, 1, 1]
    assert audit.connected_components(3, []) == [0, 1, 2]


def test_group_near_duplicates(phantoms):
    images = [phantoms[0], phantoms[1], phantoms[0][:, ::-1], phantoms[2], _jpeg(phantoms[1])]
    assert audit.group_near_duplicates(audit.fingerprints(images)) == [0, 1, 0, 2, 1]


def test_release_numbering():
    busi = {"1": "1", "647": "647", "648": "1", "1295": "1", "3235": "647", "x": "x"}
    assert {s: audit.release_original(s, "busi") for s in busi} == busi
    udiat = {"5": "5", "130": "130", "361": "1", "490": "130", "491": "1", "2700": "130",
             "150": "150", "2701": "2701"}
    assert {s: audit.release_original(s, "udiat") for s in udiat} == udiat
    stems = ["1", "2", "361", "362", "491"]
    assert audit.release_pairs(stems, "udiat") == [(0, 2), (1, 3), (0, 4)]
    fps = audit.fingerprints(synthetic.make_phantoms(5, size=32, seed=0)[0])
    assert audit.group_ids(stems, fps) == [0, 1, 2, 3, 4]
    assert audit.group_ids(stems, fps, group_by="processed_release", release="udiat") == [
        0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="needs release"):
        audit.group_ids(stems, fps, group_by="processed_release")


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Processed-layout folders: train holds 8 phantoms plus a flipped copy of phantom 2 (stem 9);
    "leaky" test holds 3 new phantoms and a JPEG copy of train 5; "clean" test has no copies."""
    root = tmp_path_factory.mktemp("processed")
    images, masks = synthetic.make_split("train", 8, 64, seed=0)
    synthetic.write_processed_layout(
        root, "train", np.concatenate([images, images[2:3, :, ::-1]]),
        np.concatenate([masks, masks[2:3, :, ::-1]]),
    )
    test_images, test_masks = synthetic.make_split("test", 3, 64, seed=0)
    synthetic.write_processed_layout(root, "clean", test_images, test_masks, stems=["a", "b", "c"])
    synthetic.write_processed_layout(
        root, "leaky", np.concatenate([test_images, [_jpeg(images[4])]]),
        np.concatenate([test_masks, masks[4:5]]), stems=["a", "b", "c", "d"], image_ext=".jpg",
    )
    return root


def test_audit_report_schema(processed):
    train = layouts.list_examples(processed, "processed", "train")
    test = layouts.list_examples(processed, "processed", "leaky")
    report = audit.audit(train, test)
    assert list(report) == ["leaked_test", "pairs", "groups_within_train"]
    assert report["leaked_test"] == ["d"]
    [[test_stem, train_stem, score]] = report["pairs"]
    assert (test_stem, train_stem) == ("d", "5") and isinstance(score, float)
    assert 0.95 <= score <= 1 and score == round(score, 4)
    assert report["groups_within_train"] == [["3", "9"]]
    assert json.loads(json.dumps(report)) == report


def test_cli_exit_codes(processed, tmp_path, capsys):
    out = tmp_path / "leaky.json"
    args = ["--train", str(processed / "train"), "--json", str(out)]
    assert audit.main(args + ["--test", str(processed / "leaky")]) == 1
    assert json.loads(out.read_text())["leaked_test"] == ["d"]
    assert "1 with a near-duplicate in train" in capsys.readouterr().out
    assert audit.main(args + ["--test", str(processed / "clean")]) == 0
    report = json.loads(out.read_text())
    assert report["leaked_test"] == [] and report["pairs"] == []
    assert audit.main(args + ["--test", str(processed / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit.main(args + ["--group_by", "processed_release"])  # needs --release


def test_cli_as_module(processed, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "hanet_jax.data.audit", "--train", str(processed / "train"),
         "--test", str(processed / "leaky"), "--json", str(tmp_path / "r.json"),
         "--threshold", "0.95"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert json.loads((tmp_path / "r.json").read_text())["leaked_test"] == ["d"]


def test_fingerprint_cache(processed, tmp_path, monkeypatch):
    paths = [e.image_path for e in layouts.list_examples(processed, "processed", "train")]
    first = audit.fingerprints(paths, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("fingerprints-*.npy"))) == 1

    def unreadable(path):
        raise AssertionError(f"read {path}: the cache was not used")

    with monkeypatch.context() as m:  # a cache hit reads no image
        m.setattr(audit.layouts, "read_image", unreadable)
        np.testing.assert_array_equal(audit.fingerprints(paths, cache_dir=tmp_path), first)
    audit.fingerprints(paths[:3], cache_dir=tmp_path)  # other paths: a new entry
    assert len(list(tmp_path.glob("fingerprints-*.npy"))) == 2
    # a changed file invalidates its entry
    os.utime(paths[0], (1, 1))
    with monkeypatch.context() as m, pytest.raises(AssertionError, match="cache was not used"):
        m.setattr(audit.layouts, "read_image", unreadable)
        audit.fingerprints(paths, cache_dir=tmp_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_keeps_groups_whole(seed):
    rng = np.random.default_rng(seed)
    group_of = rng.integers(0, 40, size=200)  # groups of assorted sizes
    stems = [f"s{i}" for i in range(200)]
    train, val = splits.grouped_split(stems, group_of.tolist(), val_fraction=0.2, seed=seed)
    assert sorted(train + val) == sorted(stems) and not set(train) & set(val)
    side = {s: "val" for s in val} | {s: "train" for s in train}
    for g in set(group_of.tolist()):
        assert len({side[s] for s, gg in zip(stems, group_of) if gg == g}) == 1
    largest = np.bincount(group_of).max()
    assert abs(len(val) - 40) <= largest
    assert splits.grouped_split(stems, group_of.tolist(), 0.2, seed) == (train, val)
    assert train == [s for s in stems if s in set(train)]  # input order kept


def test_grouped_split_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        splits.grouped_split(["a", "b"], [0, 1], val_fraction=1.0)
    with pytest.raises(ValueError, match="non-empty"):
        splits.grouped_split(["a", "b", "c"], [0, 0, 0])
    with pytest.raises(ValueError, match="2 stems but 1 group"):
        splits.grouped_split(["a", "b"], [0])


def test_release_split_is_first_fifth_in_string_order():
    names = [f"{i}.jpg" for i in range(1, 21)]
    train, val = splits.release_split(names)
    assert val == ["1.jpg", "10.jpg", "11.jpg", "12.jpg"]
    assert train == sorted(set(names) - set(val))
    assert splits.release_split(["1-2.jpg", "1.jpg", "2.jpg"], 0.34)[1] == ["1-2.jpg"]


def test_split_examples(processed):
    examples = layouts.list_examples(processed, "processed", "train")  # stems 1..9
    train, val = splits.split_examples(examples, val_fraction=0.3, seed=0)
    assert len(train) + len(val) == 9 and 2 <= len(val) <= 4
    train_stems = {e.stem for e in train}
    assert ("3" in train_stems) == ("9" in train_stems)  # the flipped copy stays with phantom 3
    assert splits.split_examples(examples, val_fraction=0.3, seed=0) == (train, val)
    train, val = splits.split_examples(examples, method="release", val_fraction=0.3)
    assert [e.stem for e in val] == ["1", "2"]
    with pytest.raises(ValueError, match="unknown split method"):
        splits.split_examples(examples, method="random")


def test_holdout_test_keeps_groups_whole_and_is_its_own_stream(processed):
    examples = layouts.list_examples(processed, "processed", "train")  # stems 1..9, 9 copies 3
    for seed in range(6):
        rest, test = splits.holdout_test(examples, 0.3, seed=seed)
        assert sorted(e.stem for e in rest + test) == sorted(e.stem for e in examples)
        # 9 is a copy of 3: the pair lands on one side together.
        assert 2 <= len(test) <= 4
        assert {"3", "9"} <= {e.stem for e in rest} or {"3", "9"} <= {e.stem for e in test}
        assert splits.holdout_test(examples, 0.3, seed=seed) == (rest, test)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        splits.holdout_test(examples, 1.5)
    # Not the validation split's draw: the same seed and fraction pick other groups.
    assert any([e.stem for e in splits.holdout_test(examples, 0.3, seed=s)[1]]
               != [e.stem for e in splits.split_examples(examples, val_fraction=0.3, seed=s)[1]]
               for s in range(6))


@pytest.mark.skipif(not os.environ.get("HANET_DATA_DIR"), reason="HANET_DATA_DIR not set")
@pytest.mark.parametrize("dataset", ["BUSI", "UDIAT"])
def test_release_copies_on_real_data(dataset):
    """On a slice of the shared train folders: content grouping puts BUSI's copies (identical,
    flipped, shifted) and UDIAT's flipped copies (rounds 0 and 9) with their original, as the
    release numbering says; UDIAT's rotated and cropped copies need that numbering."""
    root = Path(os.environ["HANET_DATA_DIR"]) / "hanet-processed" / dataset
    examples = {e.stem: e for e in layouts.list_examples(root, "processed", "train")}
    if dataset == "BUSI":
        originals = [s for s in examples if int(s) <= 647][:40]
        copies = [str(int(s) + 647 * k) for s in originals for k in range(1, 5)]
    else:
        originals = [str(s) for s in range(1, 41)]
        copies = [str(int(s) + 360 + 130 * k) for s in originals for k in (0, 9)]
    stems = originals + copies
    fps = audit.fingerprints([examples[s].image_path for s in stems])
    ids = audit.group_ids(stems, fps)
    group = dict(zip(stems, ids))
    release = dataset.lower()
    assert all(group[c] == group[audit.release_original(c, release)] for c in copies)
    if dataset == "UDIAT":  # rotated copies: invisible to correlation, caught by the numbering
        rotated = [str(int(s) + 360 + 130 * 3) for s in originals[:10]]
        stems = originals[:10] + rotated
        fps = audit.fingerprints([examples[s].image_path for s in stems])
        assert audit.near_duplicate_pairs(fps[:10], fps[10:]) == []
        ids = audit.group_ids(stems, fps, group_by="processed_release", release="udiat")
        assert ids[:10] == ids[10:]


def test_grouped_folds_partition_whole_groups_evenly():
    rng = np.random.default_rng(0)
    group_of = rng.integers(0, 60, size=300)  # 60 groups of uneven sizes
    folds = splits.grouped_folds(group_of.tolist(), 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(300))  # a partition
    for a in range(5):
        for b in range(a + 1, 5):  # no group in two folds
            assert not set(group_of[folds[a]]) & set(group_of[folds[b]])
    largest_group = np.bincount(group_of).max()
    assert max(map(len, folds)) - min(map(len, folds)) <= largest_group
    assert splits.grouped_folds(group_of.tolist(), 5, seed=3) == folds
    assert splits.grouped_folds(group_of.tolist(), 5, seed=4) != folds
    with pytest.raises(ValueError, match="folds must be >= 2"):
        splits.grouped_folds([0, 1], 1, seed=0)
    with pytest.raises(ValueError, match="2 near-duplicate groups into 3 folds"):
        splits.grouped_folds([0, 0, 1], 3, seed=0)


def test_split_examples_by_fold_validates_each_example_once(processed):
    examples = layouts.list_examples(processed, "processed", "train")
    vals = [splits.split_examples(examples, folds=3, fold=f, seed=0) for f in range(3)]
    stems = sorted(e.stem for e in examples)
    assert sorted(e.stem for _, val in vals for e in val) == stems
    for train, val in vals:
        assert sorted(e.stem for e in train + val) == stems and val
    with pytest.raises(ValueError, match="fold must be in"):
        splits.split_examples(examples, folds=3, fold=3)
    with pytest.raises(ValueError, match="grouped split"):
        splits.split_examples(examples, method="release", folds=3)
