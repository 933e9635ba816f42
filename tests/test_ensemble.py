"""Ensembles (hanet_jax/ensemble.py): the ensemble.json format, the held-out averaging, and a
real 2-fold cross-validation scored by eval.py (out-of-fold validation, averaged test) and
used by predict.py."""

import json

import numpy as np
import pytest

import _train_helpers as helpers
import data_fixtures
from hanet_jax.inference import ensemble
from hanet_jax.train import loop as train_lib
from hanet_jax.checkpoints.format import CheckpointError


class Constant:
    """A fake predictor: every image's map is `value`."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def __call__(self, images):
        self.calls.append(len(images))
        return [np.full(im.shape[:2], self.value, np.float32) for im in images]


def test_average_of_the_members_that_held_each_image_out():
    a, b, c = Constant(0.2), Constant(0.4), Constant(0.9)
    images = [np.zeros((4, 5, 3), np.uint8)] * 3
    both = ensemble.EnsemblePredictor([a, b, c])
    np.testing.assert_allclose([p[0, 0] for p in both(images)], [0.5] * 3, rtol=1e-6)
    oof = ensemble.EnsemblePredictor([a, b, c], held_out=[{"x"}, {"y"}, {"x", "y", "z"}])
    probs = oof.predict_examples(["x", "y", "z"], images)
    np.testing.assert_allclose([p[0, 0] for p in probs], [0.55, 0.65, 0.9], rtol=1e-6)
    assert probs[0].shape == (4, 5)
    assert a.calls[-1] == 1 and b.calls[-1] == 1 and c.calls[-1] == 3  # each only on its images
    with pytest.raises(ValueError, match=r"held out image\(s\) \['w'\]"):
        oof.predict_examples(["x", "w"], images[:2])
    with pytest.raises(ValueError, match="2 held-out sets for 3 predictors"):
        ensemble.EnsemblePredictor([a, b, c], held_out=[{"x"}, {"y"}])


def test_ensemble_file_errors_name_the_file(tmp_path):
    assert ensemble.member_dirs(tmp_path) == [str(tmp_path)]  # no ensemble.json: itself
    with pytest.raises(CheckpointError, match="fold_0 does not exist"):
        ensemble.write(tmp_path, ["fold_0"])  # not a checkpoint
    with pytest.raises(CheckpointError, match="relative"):
        ensemble.write(tmp_path, [str(tmp_path / "fold_0")])
    (tmp_path / ensemble.ENSEMBLE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="ensemble.json: cannot read"):
        ensemble.member_dirs(tmp_path)
    (tmp_path / ensemble.ENSEMBLE_FILE).write_text(json.dumps({"kind": "ensemble", "members": []}))
    with pytest.raises(CheckpointError, match="ensemble.json: expected"):
        ensemble.member_dirs(tmp_path)
    (tmp_path / ensemble.ENSEMBLE_FILE).write_text(json.dumps({"kind": "ensemble", "members": ["gone"]}))
    with pytest.raises(CheckpointError, match="gone"):
        ensemble.member_dirs(tmp_path)
    assert ensemble.main(["write", str(tmp_path), "fold_0"]) == 2


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """A real 2-fold cross-validation of 30 phantoms (6 held out as test), one epoch per run."""
    root = tmp_path_factory.mktemp("cv")
    data_fixtures.write_processed(str(root / "data"), n=30)
    for fold in range(2):
        config = helpers.tiny_config(num_epochs=1, data__source="folder", data__test_fraction=0.2,
                                     data__root=str(root / "data"), data__layout="processed",
                                     data__folds=2, data__fold=fold)
        train_lib.train_and_evaluate(config, str(root / f"fold_{fold}"))
    ensemble.write(root, ["fold_0", "fold_1"])
    return root


def _split(run):
    return json.loads((run / "data_split.json").read_text())


def _dice_by_stem(report_csv):
    import csv

    return {r["stem"]: float(r["dice"]) for r in csv.DictReader(open(report_csv))
            if r["protocol"] == "fixed"}


def test_folds_share_the_test_set_and_partition_the_rest(two_folds):
    s0, s1 = _split(two_folds / "fold_0"), _split(two_folds / "fold_1")
    assert s0["test"] == s1["test"] and len(s0["test"]) == 6
    assert (s0["folds"], s0["fold"], s1["fold"]) == (2, 0, 1)
    assert not set(s0["val"]) & set(s1["val"])
    assert set(s0["val"]) | set(s1["val"]) | set(s0["test"]) == {str(i) for i in range(1, 31)}


@pytest.mark.slow
def test_eval_scores_validation_out_of_fold_and_test_by_the_average(two_folds, tmp_path):
    import eval as eval_cli

    s0, s1 = _split(two_folds / "fold_0"), _split(two_folds / "fold_1")
    out = {}
    for name, ckpt, split in (("oof", two_folds, "val"), ("f0", two_folds / "fold_0", "val"),
                              ("f1", two_folds / "fold_1", "val"), ("test", two_folds, "test")):
        assert eval_cli.main(["--checkpoint", str(ckpt), "--run_split", split, "--bootstrap", "0",
                              "--out", str(tmp_path / f"{name}.json"),
                              "--per_image", str(tmp_path / f"{name}.csv")]) == 0
        out[name] = _dice_by_stem(tmp_path / f"{name}.csv")
    # out-of-fold: every non-test image once, scored by the one run that validated on it
    assert set(out["oof"]) == set(s0["val"]) | set(s1["val"])
    assert out["oof"] == pytest.approx({**out["f0"], **out["f1"]}, abs=1e-6)
    report = json.loads((tmp_path / "oof.json").read_text())
    assert report["ensemble"]["members"] == [str(two_folds / "fold_0"), str(two_folds / "fold_1")]
    assert report["n_images"] == 24
    # test: both runs' average, which neither run alone gives
    assert set(out["test"]) == set(s0["test"])
    from hanet_jax.eval import evaluate as eval_lib
    from hanet_jax.checkpoints.loading import load_bundle
    from hanet_jax.inference.predictor import Predictor

    examples, _ = eval_lib.run_split_examples(two_folds / "fold_0", "test")
    images = [eval_lib.load_example(ex)[0] for ex in examples]
    singles = [Predictor(load_bundle(two_folds / f"fold_{k}"))(images) for k in range(2)]
    averaged = ensemble.load_predictor(two_folds)(images)
    for p0, p1, p in zip(*singles, averaged):
        np.testing.assert_allclose(p, (p0 + p1) / 2, atol=1e-6)
    assert max(float(np.abs(p0 - p1).max()) for p0, p1 in zip(*singles)) > 1e-3
    # the threshold is chosen on the out-of-fold predictions of all 24 validation images
    assert eval_cli.main(["--checkpoint", str(two_folds), "--run_split", "test",
                          "--threshold_from_split", "val", "--bootstrap", "0",
                          "--out", str(tmp_path / "t.json")]) == 0
    selection = json.loads((tmp_path / "t.json").read_text())["protocols"]["fixed"]["threshold_selection"]
    assert selection["n_images"] == 24 and len(selection["source"]) == 2
    # Grad-CAM explains one model: refused with the member to give instead
    assert eval_cli.main(["--checkpoint", str(two_folds), "--run_split", "test", "--bootstrap", "0",
                          "--gradcam", str(tmp_path / "cam"), "--out", str(tmp_path / "c.json")]) == 2


def test_predict_cli_segments_with_the_average(two_folds, tmp_path):
    import predict as predict_cli

    data_fixtures.write_processed(str(tmp_path / "new"), n=2)
    src = tmp_path / "new" / "train" / "images"
    assert predict_cli.main(["--checkpoint", str(two_folds), "--input", str(src), "--output",
                             str(tmp_path / "masks"), "--probabilities"]) == 0
    from hanet_jax.data.layouts import read_image

    images = [read_image(str(src / f"{i}.png")) for i in (1, 2)]
    expected = ensemble.load_predictor(two_folds)(images)
    for i, want in zip((1, 2), expected):
        np.testing.assert_allclose(np.load(tmp_path / "masks" / f"{i}.npy"), want, atol=1e-6)
