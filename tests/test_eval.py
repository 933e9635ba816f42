"""eval_lib and eval.py: exact metrics with a fake model, the JSON/CSV agreement, bootstrap seeds,
validation-only thresholds, separate TTA entries, bad input, and one end-to-end CLI run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanet_jax.eval import evaluate as eval_lib
from hanet_jax.checkpoints.loading import Bundle
from hanet_jax.json_files import write_json
from hanet_jax.data.layouts import list_examples
from hanet_jax.eval.metrics import METRIC_NAMES, read_per_image_csv, summarize

ROOT = Path(__file__).resolve().parents[1]
NAN = math.nan
# Every image written >= layouts.MIN_IMAGE_SIDE (32): the 4x4 cases are drawn by hand at 4x4 and
# written at 32x32, each drawn pixel a SCALE x SCALE block (nearest neighbour). Ratio metrics,
# area fractions and threshold choices are unchanged; absolute pixel counts are SCALE**2 times
# the hand counts.
SCALE = 8


# ----------------------------------------------------------------------------- fixtures


def _up(a):
    """`a` (drawn at hand size) upscaled SCALE times on both axes by nearest neighbour; None stays."""
    return None if a is None else np.repeat(np.repeat(a, SCALE, axis=0), SCALE, axis=1)


def _scaled(cases):
    """(stem, id, gt, prob) cases drawn by hand, with gt and prob upscaled by `_up`."""
    return [(stem, ident, _up(gt), _up(prob)) for stem, ident, gt, prob in cases]


def _spec():
    """4x4 cases: (stem, id, gt, prob), drawn at 4x4 and returned upscaled to 4*SCALE square by
    `_scaled`. The image is the constant `10 * id`, so the fake model recognises it; the
    probability maps are chosen so every count is easy to check by hand (at 4x4; on disk each
    count is SCALE**2 times as large)."""
    z = np.zeros((4, 4), bool)
    # "lesion": gt = top-left 2x2 block; gt probs 0.9 0.9 0.6 0.3, two outside 0.7 and 0.55.
    gt_a = z.copy(); gt_a[:2, :2] = True
    p_a = np.full((4, 4), 0.1, np.float32)
    p_a[0, 0], p_a[0, 1], p_a[1, 0], p_a[1, 1] = 0.9, 0.9, 0.6, 0.3
    p_a[3, 3], p_a[3, 2] = 0.7, 0.55
    # "empty_mask": no tumour, one confident false positive.
    p_b = np.full((4, 4), 0.2, np.float32); p_b[2, 2] = 0.8
    # "empty_pred": two tumour pixels at 0.4, everything below 0.5.
    gt_c = z.copy(); gt_c[3, :2] = True
    p_c = np.full((4, 4), 0.1, np.float32); p_c[gt_c] = 0.4
    # "constant": a constant map of 0.3 over a 4-pixel tumour.
    gt_d = z.copy(); gt_d[1:3, 1:3] = True
    p_d = np.full((4, 4), 0.3, np.float32)
    # "normal": empty mask, nothing predicted at 0.5.
    p_e = np.full((4, 4), 0.2, np.float32)
    return _scaled([("lesion", 1, gt_a, p_a), ("empty_mask", 2, z, p_b), ("empty_pred", 3, gt_c, p_c),
                    ("constant", 4, gt_d, p_d), ("normal", 5, z, p_e)])


def _m(tp, fp, fn, tn):
    """Hand-written expected metrics, as exact fractions (None: undefined). The counts are given
    at the 4x4 hand size; the expected counts are those times SCALE**2 (the upscaled images),
    the ratios are the same at either size."""
    f = lambda a, b: Fraction(a, b) if b else None
    k = SCALE ** 2
    return {"TP": tp * k, "FP": fp * k, "FN": fn * k, "TN": tn * k,
            "jaccard": f(tp, tp + fp + fn), "dice": f(2 * tp, 2 * tp + fp + fn),
            "sensitivity": f(tp, tp + fn), "specificity": f(tn, tn + fp), "precision": f(tp, tp + fp),
            "accuracy": f(tp + tn, 16)}


# Worked out by hand from _spec at 4x4 (threshold 0.5 for "fixed"; the oracle's F1 scan in
# comments); `_m` scales the counts by SCALE**2.
EXPECTED = {
    "fixed": {
        "lesion": (0.5, _m(3, 2, 1, 10)),       # 0.9 0.9 0.6 in, 0.3 missed; 0.7 0.55 false
        "empty_mask": (0.5, _m(0, 1, 0, 15)),   # sensitivity undefined
        "empty_pred": (0.5, _m(0, 0, 2, 14)),   # precision undefined
        "constant": (0.5, _m(0, 0, 4, 12)),     # 0.3 < 0.5: nothing predicted
        "normal": (0.5, _m(0, 0, 0, 16)),       # jaccard, dice, sensitivity, precision undefined
    },
    "paper_oracle": {
        # F1 at 0.9: .667, 0.7: .571, 0.6: .75, 0.55: .667, 0.3: .8 (best), 0.1: .4
        "lesion": (0.3, _m(4, 2, 0, 10)),
        # empty ground truth: F1 = 0 everywhere, the lowest threshold wins: everything predicted
        "empty_mask": (0.2, _m(0, 16, 0, 0)),
        "empty_pred": (0.4, _m(2, 0, 0, 14)),   # 0.4 separates perfectly
        "constant": (0.3, _m(4, 12, 0, 0)),     # the only threshold: everything predicted
        "normal": (0.2, _m(0, 16, 0, 0)),
    },
}


def _write_split(root: Path, split: str, cases, mask_dir: str = "masks") -> None:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / mask_dir).mkdir(parents=True, exist_ok=True)
    for stem, ident, gt, _ in cases:
        image = np.full(gt.shape, 10 * ident, np.uint8)
        Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
        Image.fromarray(gt.astype(np.uint8) * 255).save(root / split / mask_dir / f"{stem}.png")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A ported-style checkpoint of a random no_tam HA-Net at 64x64 (no_tam rather than baseline:
    same encoder, plus the SFEBs that --gradcam needs)."""
    from hanet_jax.checkpoints.format import save_variables
    from hanet_jax.models.architectures import model_config
    from model_fixtures import SIZE, tiny_model

    model, variables = tiny_model()
    return save_variables(tmp_path_factory.mktemp("ckpt") / "tiny", variables, model_cfg=model_config(model),
                          image_size=SIZE)


class FakeModel:
    """predict_fn: the stored map of the image whose constant value is 10 * id; records ids."""

    def __init__(self, cases, tta_maps=None):
        self.maps = {ident: prob for _, ident, _, prob in cases}
        self.tta_maps = tta_maps
        self.seen: list[int] = []

    def __call__(self, images):
        out = []
        for im in images:
            ident = int(im[0, 0, 0]) // 10
            self.seen.append(ident)
            out.append(self.maps[ident].copy())
        return out


@pytest.fixture
def data(tmp_path):
    cases = _spec()
    _write_split(tmp_path / "data", "test", cases)
    return tmp_path / "data", cases


def _close(actual, expected):
    if expected is None:
        return math.isnan(actual)
    return actual == pytest.approx(float(expected), rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------- metric arithmetic


def test_every_metric_under_both_protocols_matches_hand_computation(data):
    root, cases = data
    result = eval_lib.evaluate(FakeModel(cases), list_examples(str(root), "processed", "test"),
                               protocols=("fixed", "paper_oracle"), threshold=0.5, n_bootstrap=0, batch_size=2)
    assert result.n_images == 5 and len(result.rows) == 10
    for row in result.rows:
        threshold, exp = EXPECTED[row["protocol"]][row["stem"]]
        assert row["threshold"] == pytest.approx(threshold), row
        for key, value in exp.items():
            assert _close(row[key], value), (row["protocol"], row["stem"], key, row[key], value)
    for protocol, table in EXPECTED.items():
        s = result.summaries[protocol]
        for m in METRIC_NAMES:
            vals = [e[m] for _, e in table.values() if e[m] is not None]
            assert s["n_undefined"][m] == len(table) - len(vals)
            assert _close(s["mean"][m], sum(vals) / len(vals) if vals else None), (protocol, m)
            # totals of the scaled counts; _m's ratios are the same whatever the scale
            tot = [sum(e[c] for _, e in table.values()) for c in ("TP", "FP", "FN", "TN")]
            assert _close(s["pooled"][m], _m(*tot)[m] if m != "accuracy" else Fraction(tot[0] + tot[3], sum(tot)))
    assert result.summaries["fixed"]["threshold"] == 0.5
    assert result.summaries["paper_oracle"]["label"] == eval_lib.ORACLE_LABEL
    # spot checks of the hand table: fixed-protocol mean Dice over the 4 defined images
    assert result.summaries["fixed"]["mean"]["dice"] == pytest.approx((2 / 3) / 4)
    assert result.summaries["fixed"]["n_undefined"]["dice"] == 1


def test_probabilities_are_scored_at_the_mask_resolution_or_the_model_resolution(data):
    root, cases = data
    examples = list_examples(str(root), "processed", "test")
    # half the images' resolution (2x2 of the 4x4 drawing), resized bilinearly to the mask's
    low_res = lambda images: [np.full((2 * SCALE, 2 * SCALE), 0.7, np.float32) for _ in images]
    rows = eval_lib.evaluate(low_res, examples, protocols=("fixed",), n_bootstrap=0).rows
    assert all(r["TP"] + r["FP"] + r["FN"] + r["TN"] == 16 * SCALE ** 2 for r in rows)  # 4x4 drawing
    assert {r["stem"]: r["TP"] for r in rows}["lesion"] == 4 * SCALE ** 2  # its 2x2 lesion
    # score_size: image and mask go to half size, 2x2 of the drawing (mask by nearest), before
    # the model sees them
    seen = []
    at_model = lambda images: seen.extend(im.shape for im in images) or [np.ones(im.shape[:2]) * 0.9 for im in images]
    half = (2 * SCALE, 2 * SCALE)
    rows = eval_lib.evaluate(at_model, examples, protocols=("fixed",), n_bootstrap=0, score_size=half).rows
    assert set(seen) == {(*half, 3)} and all(r["TP"] + r["FP"] + r["FN"] + r["TN"] == 4 * SCALE ** 2 for r in rows)


def test_csv_and_json_agree_and_nan_is_null(data, tmp_path):
    root, cases = data
    result = eval_lib.evaluate(FakeModel(cases), list_examples(str(root), "processed", "test"),
                               protocols=("fixed", "paper_oracle"), n_bootstrap=50)
    from hanet_jax.eval.metrics import write_per_image_csv

    write_per_image_csv(tmp_path / "rows.csv", result.rows)
    write_json(tmp_path / "r.json", {"protocols": result.summaries})
    _assert_csv_matches_json(read_per_image_csv(tmp_path / "rows.csv"),
                             json.loads((tmp_path / "r.json").read_text())["protocols"], "")
    # an image set where Dice is undefined everywhere: NaN mean and interval are written as null
    normal = [e for e in list_examples(str(root), "processed", "test") if e.stem == "normal"]
    result = eval_lib.evaluate(FakeModel(cases), normal, protocols=("fixed",), n_bootstrap=50)
    write_json(tmp_path / "n.json", {"protocols": result.summaries})
    text = (tmp_path / "n.json").read_text()
    assert "NaN" not in text
    fixed = json.loads(text)["protocols"]["fixed"]
    assert fixed["mean"]["dice"] is None and fixed["ci95"]["dice"] == [None, None]
    assert fixed["pooled"]["dice"] is None and fixed["n_undefined"]["dice"] == 1
    assert fixed["mean"]["accuracy"] == 1.0


def _assert_csv_matches_json(rows, protocols_json, suffix):
    for protocol, s in protocols_json.items():
        mine = [r for r in rows if r["protocol"] == protocol + suffix]
        assert mine, protocol + suffix
        again = summarize(mine)
        for kind in ("mean", "pooled"):
            for m in METRIC_NAMES:
                want = s[kind][m]
                got = again[kind][m]
                assert (want is None and math.isnan(got)) or got == pytest.approx(want, rel=1e-12), (protocol, kind, m)
        assert again["n_undefined"] == s["n_undefined"]


def test_bootstrap_intervals_are_reproducible_with_the_seed(data):
    root, cases = data
    examples = list_examples(str(root), "processed", "test")
    ev = lambda seed: eval_lib.evaluate(FakeModel(cases), examples, protocols=("paper_oracle",),
                                        n_bootstrap=200, seed=seed).summaries["paper_oracle"]["ci95"]
    a, b, c = ev(0), ev(0), ev(1)
    assert a == b
    assert a != c
    lo, hi = a["dice"]
    assert lo <= np.mean([0.8, 0, 1, 0.4, 0]) <= hi


def test_select_threshold_uses_the_validation_images_only(tmp_path):
    z = np.zeros((4, 4), bool)
    gt = z.copy(); gt[:2] = True
    p_val = np.where(gt, 0.72, 0.68).astype(np.float32)  # only 0.70 on the grid separates them
    p_test = np.where(gt, 0.32, 0.28).astype(np.float32)  # would want 0.30
    val_cases = _scaled([("v1", 1, gt, p_val), ("v2", 2, z, np.full((4, 4), 0.1, np.float32))])
    test_cases = _scaled([("t1", 3, gt, p_test)])
    root = tmp_path / "data"
    _write_split(root, "val", val_cases)
    _write_split(root, "test", test_cases)
    model = FakeModel(val_cases + test_cases)
    test_examples = list_examples(str(root), "processed", "test")
    val_examples, info = eval_lib.resolve_threshold_examples(tmp_path / "ckpt", str(root), "processed", "val",
                                                             test_examples)
    choice = eval_lib.select_threshold(model, val_examples)
    assert choice.threshold == pytest.approx(0.7)
    assert sorted(set(model.seen)) == [1, 2]  # never a test image
    assert info["source"] == os.path.join(str(root), "val")
    assert len(choice.mean_dice) == len(eval_lib.THRESHOLD_GRID) == 19
    # the same image files as the evaluated split are refused
    with pytest.raises(eval_lib.EvalError, match="shares 1 image"):
        eval_lib.resolve_threshold_examples(tmp_path / "ckpt", str(root), "processed", "test", test_examples)


def test_threshold_ties_prefer_the_one_closest_to_half(data):
    root, cases = data
    flat = lambda images: [np.full((4 * SCALE, 4 * SCALE), 0.01, np.float32) for _ in images]  # every threshold ties
    examples = [e for e in list_examples(str(root), "processed", "test") if e.stem == "lesion"]
    assert eval_lib.select_threshold(flat, examples).threshold == 0.5


# ----------------------------------------------------------------------------- run() with a fake model


@pytest.fixture
def fake_predictor(monkeypatch):
    """`run` with a fake checkpoint: load_bundle and Predictor replaced; TTA maps are squared."""
    calls = []

    class FakePredictor:
        def __init__(self, bundle, batch_size=8, tta=False):
            self.tta, self.model = tta, FakeModel(bundle.meta["cases"])
            calls.append(self)

        def __call__(self, images):
            probs = self.model(images)
            return [p ** 2 if self.tta else p for p in probs]

    def fake_load(directory):
        # the fake model works at the (upscaled) 4x4 cases' size
        return Bundle(types.SimpleNamespace(variant="baseline"), {}, (4 * SCALE, 4 * SCALE),
                      {"cases": fake_load.cases})

    import hanet_jax.checkpoints.loading
    import hanet_jax.inference.predictor

    monkeypatch.setattr(hanet_jax.checkpoints.loading, "load_bundle", fake_load)
    monkeypatch.setattr(hanet_jax.inference.predictor, "Predictor", FakePredictor)
    return fake_load, calls


def test_tta_entries_are_separate_and_threshold_comes_from_val(tmp_path, fake_predictor):
    fake_load, calls = fake_predictor
    z = np.zeros((4, 4), bool)
    gt = z.copy(); gt[:2] = True
    val_cases = _scaled([("v1", 7, gt, np.where(gt, 0.72, 0.68).astype(np.float32))])  # 0.70 plain; TTA (squared): 0.50
    test_cases = _spec()
    fake_load.cases = val_cases + test_cases
    root = tmp_path / "data"
    _write_split(root, "val", val_cases)
    _write_split(root, "test", test_cases)
    cfg = eval_lib.EvalConfig(checkpoint=str(tmp_path / "ckpt"), data_dir=str(root), layout="processed", split="test",
                              out=str(tmp_path / "r.json"), protocols=("fixed", "paper_oracle"),
                              per_image=str(tmp_path / "rows.csv"), tta=True, threshold_from_split="val",
                              bootstrap=100)
    report = eval_lib.run(cfg, log=lambda s: None)
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert set(on_disk) >= {"n_images", "checkpoint", "data", "protocols", "protocols_tta"}
    plain, tta = on_disk["protocols"]["fixed"], on_disk["protocols_tta"]["fixed"]
    assert plain["threshold"] == pytest.approx(0.7) and plain["threshold_source"] == "val"
    assert tta["threshold"] == pytest.approx(0.5) and tta["threshold_selection"]["split"] == "val"
    assert plain["mean"] != tta["mean"]
    rows = read_per_image_csv(tmp_path / "rows.csv")
    assert sorted({r["protocol"] for r in rows}) == ["fixed", "fixed+tta", "paper_oracle", "paper_oracle+tta"]
    assert len(rows) == 4 * 5
    _assert_csv_matches_json(rows, on_disk["protocols"], "")
    _assert_csv_matches_json(rows, on_disk["protocols_tta"], "+tta")
    assert [c.tta for c in calls] == [False, True]
    assert report["n_images"] == 5


def test_data_split_json_of_a_workdir_supplies_the_val_stems(tmp_path, fake_predictor):
    fake_load, _ = fake_predictor
    z = np.zeros((4, 4), bool)
    gt = z.copy(); gt[:2] = True
    train_cases = _scaled([("a", 11, gt, np.where(gt, 0.42, 0.38).astype(np.float32)),  # val stem: wants 0.40
                           ("b", 12, gt, np.where(gt, 0.92, 0.88).astype(np.float32))])  # train stem: would want 0.90
    test_cases = _spec()
    fake_load.cases = train_cases + test_cases
    root = tmp_path / "data"
    _write_split(root, "train", train_cases)
    _write_split(root, "test", test_cases)
    ckpt = tmp_path / "workdir"
    ckpt.mkdir()
    (ckpt / "data_split.json").write_text(json.dumps({"root": str(root), "layout": "processed", "val": ["a"]}))
    cfg = eval_lib.EvalConfig(checkpoint=str(ckpt), data_dir=str(root), layout="processed", split="test",
                              out=str(tmp_path / "r.json"), threshold_from_split="val", bootstrap=0)
    fixed = eval_lib.run(cfg, log=lambda s: None)["protocols"]["fixed"]
    assert fixed["threshold"] == pytest.approx(0.4)
    assert fixed["threshold_selection"]["source"].endswith("data_split.json")
    assert fixed["threshold_selection"]["n_images"] == 1


# ----------------------------------------------------------------------------- the CLI


def _cli():
    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_bad_input_exits_nonzero_naming_the_file(tmp_path, capsys):
    cli = _cli()
    root = tmp_path / "data"
    _write_split(root, "test", _spec())
    base = ["--checkpoint", str(tmp_path / "none"), "--layout", "processed", "--out", str(tmp_path / "r.json")]
    missing = tmp_path / "nowhere"
    assert cli.main(base + ["--data_dir", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert cli.main(base + ["--data_dir", str(root), "--split", "val"]) == 2
    assert str(root / "val") in capsys.readouterr().err
    # a missing checkpoint, with valid data
    assert cli.main(base + ["--data_dir", str(root)]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    # a missing mask, in a separate process: exit status and no traceback
    os.remove(root / "test" / "masks" / "lesion.png")
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), *base, "--data_dir", str(root)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2
    assert str(root / "test" / "images" / "lesion.png") in r.stderr and "no mask" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_end_to_end_with_a_tiny_real_checkpoint(tmp_path, tiny_checkpoint, capsys):
    """eval.py on 5 PNGs (48x56 and 56x56, scored at their own size) with a random no_tam HA-Net
    at 64x64: JSON schema, CSV = JSON, overlays, the grid and Grad-CAM figures."""
    from data_fixtures import make_pair

    root = tmp_path / "data"
    for split, seeds in (("test", range(5)), ("val", range(10, 12))):
        for i in seeds:
            image, mask = make_pair(i, 48 + 8 * (i % 2), 56)  # two sizes: the grid resizes rows
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / "masks" / f"{i}.png")
    out, csv_path, ov, gc = tmp_path / "r.json", tmp_path / "rows.csv", tmp_path / "ov", tmp_path / "gc"
    rc = _cli().main(["--checkpoint", str(tiny_checkpoint), "--data_dir", str(root), "--layout", "processed",
                      "--split", "test", "--protocol", "both", "--out", str(out), "--per_image", str(csv_path),
                      "--overlays", str(ov), "--threshold_from_split", "val", "--bootstrap", "200",
                      "--gradcam", str(gc), "--gradcam_stems", "0,3", "--batch_size", "4"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["n_images"] == 5 and report["checkpoint"] == str(tiny_checkpoint)
    assert report["data"] == {"root": str(root), "layout": "processed", "split": "test",
                              "scored_at": "ground-truth mask resolution"}
    assert set(report["protocols"]) == {"fixed", "paper_oracle"} and "protocols_tta" not in report
    fixed, oracle = report["protocols"]["fixed"], report["protocols"]["paper_oracle"]
    assert fixed["threshold_source"] == "val" and fixed["threshold"] in [pytest.approx(t) for t in eval_lib.THRESHOLD_GRID]
    assert oracle["label"] == eval_lib.ORACLE_LABEL
    for s in (fixed, oracle):
        assert list(s["mean"]) == list(METRIC_NAMES) == list(s["pooled"]) == list(s["ci95"]) == list(s["n_undefined"])
        for m in METRIC_NAMES:
            lo, hi = s["ci95"][m]
            assert (lo is None) == (s["mean"][m] is None)
            assert lo is None or lo <= s["mean"][m] + 1e-12 <= hi + 2e-12
    rows = read_per_image_csv(csv_path)
    assert len(rows) == 10 and {r["stem"] for r in rows} == {str(i) for i in range(5)}
    _assert_csv_matches_json(rows, report["protocols"], "")
    assert sorted(p.name for p in ov.iterdir()) == sorted([f"{i}.png" for i in range(5)] + ["cases_grid.png"])
    assert Image.open(ov / "0.png").size == (56, 48)
    assert Image.open(ov / "cases_grid.png").size[1] > 3 * 48
    assert sorted(p.name for p in gc.iterdir()) == ["0_gradcam.png", "3_gradcam.png"]


def test_run_split_reads_normal_images_when_the_run_included_them(tmp_path):
    """A BUSI run with data.include_normal=True records it, so its held-out normal images are found."""
    from data_fixtures import write_busi

    root = tmp_path / "busi"
    write_busi(str(root))
    ckpt = tmp_path / "workdir"
    ckpt.mkdir()
    record = {"root": str(root), "layout": "busi", "split": None, "val": ["benign (1)", "normal (1)"]}
    (ckpt / "data_split.json").write_text(json.dumps({**record, "include_normal": True}))
    examples, _ = eval_lib.run_split_examples(ckpt, "val")
    assert [ex.stem for ex in examples] == ["benign (1)", "normal (1)"]
    (ckpt / "data_split.json").write_text(json.dumps(record))  # older runs: lesions only
    with pytest.raises(eval_lib.EvalError, match=r"1 val stem\(s\) not found .*normal \(1\)"):
        eval_lib.run_split_examples(ckpt, "val")


def test_threshold_split_other_than_val_is_not_replaced_by_the_workdir_record(tmp_path):
    z = np.zeros((4, 4), bool)
    root = tmp_path / "data"
    _write_split(root, "tune", _scaled([("u", 1, z, None)]))
    _write_split(root, "test", _scaled([("t", 2, z, None)]))
    ckpt = tmp_path / "workdir"
    ckpt.mkdir()
    (ckpt / "data_split.json").write_text(json.dumps({"root": str(root), "layout": "processed",
                                                       "split": "test", "val": ["t"]}))
    test = list_examples(str(root), "processed", "test")
    examples, info = eval_lib.resolve_threshold_examples(ckpt, str(root), "processed", "tune", test)
    assert [ex.stem for ex in examples] == ["u"] and info["source"] == os.path.join(str(root), "tune")
