"""Strata (hanet_jax/eval/strata.py): lesion class, size terciles, missed and phantom lesions, in
the JSON, the per-image CSV, eval.py's table, the worst-first overlays grid and the results tables.

Every expected figure below is worked out by hand in the comments from the tiny BUSI-layout set
of `CASES` (drawn at 10x10, so a lesion of k drawn pixels covers k% of the image; written and
predicted at SCALE times that size, where it is k * SCALE**2 pixels and still k%)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hanet_jax.checkpoints.loading import Bundle
from hanet_jax.data.layouts import Example, list_examples
from hanet_jax.eval import evaluate as eval_lib
from hanet_jax.eval import overlays as viz
from hanet_jax.eval import strata
from hanet_jax.eval.metrics import read_per_image_csv

ROOT = Path(__file__).resolve().parents[1]
SIDE = 10  # 10x10 drawings: 100 pixels, so k lesion pixels are an area of k / 100
# Every image written >= layouts.MIN_IMAGE_SIDE (32): the 10x10 drawings are written (and the
# fake model predicts) at 40x40, each drawn pixel a SCALE x SCALE block (nearest neighbour), which
# keeps every ratio, area fraction and threshold decision below.
SCALE = 4


def _up(a: np.ndarray) -> np.ndarray:
    """A 10x10 drawing upscaled SCALE times on both axes by nearest neighbour (dtype kept)."""
    return np.repeat(np.repeat(a, SCALE, axis=0), SCALE, axis=1)


def _block(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), bool)
    mask[top:top + height, left:left + width] = True
    return mask


# (stem, class folder, id, ground truth, predicted pixels). The image is the constant 10 * id, so
# the fake model knows it; it predicts 0.9 on the predicted pixels and 0.1 elsewhere.
CASES = [
    ("benign (1)", "benign", 1, _block(0, 0, 2, 2), _block(0, 0, 2, 2)),        # 4 px; exact
    ("benign (2)", "benign", 2, _block(0, 0, 3, 3), _block(6, 6, 3, 3)),        # 9 px; disjoint: missed
    ("benign (3)", "benign", 3, _block(0, 0, 4, 4), _block(0, 0, 2, 4)),        # 16 px; half of it
    ("malignant (1)", "malignant", 4, _block(0, 0, 5, 5), _block(0, 0, 5, 6)),  # 25 px; 5 px too many
    ("malignant (2)", "malignant", 5, _block(0, 0, 6, 6), _block(0, 0, 1, 1)),  # 36 px; 1 px: missed
    ("malignant (3)", "malignant", 6, _block(0, 0, 7, 7), _block(0, 0, 7, 7)),  # 49 px; exact
    ("normal (1)", "normal", 7, _block(0, 0, 0, 0), _block(4, 4, 1, 2)),        # lesion-free; phantom
    ("normal (2)", "normal", 8, _block(0, 0, 0, 0), _block(0, 0, 0, 0)),        # lesion-free; clean
]
# Fixed protocol at 0.5, per lesion (TP, FP, FN -> Dice 2TP/(2TP+FP+FN), Jaccard TP/(TP+FP+FN)),
# counted in drawn pixels (on disk each count is SCALE**2 times as large; the ratios are the same):
#   benign (1)     4, 0, 0   -> Dice 1,             Jaccard 1
#   benign (2)     0, 9, 9   -> Dice 0,             Jaccard 0            (missed: 0 < 0.1)
#   benign (3)     8, 0, 8   -> Dice 16/24 = 2/3,   Jaccard 8/16 = 1/2
#   malignant (1) 25, 5, 0   -> Dice 50/55 = 10/11, Jaccard 25/30 = 5/6
#   malignant (2)  1, 0, 35  -> Dice 2/37 = 0.054,  Jaccard 1/36         (missed: 0.054 < 0.1)
#   malignant (3) 49, 0, 0   -> Dice 1,             Jaccard 1
DICE = {"benign (1)": 1, "benign (2)": 0, "benign (3)": 2 / 3,
        "malignant (1)": 10 / 11, "malignant (2)": 2 / 37, "malignant (3)": 1}
JACCARD = {"benign (1)": 1, "benign (2)": 0, "benign (3)": 1 / 2,
           "malignant (1)": 5 / 6, "malignant (2)": 1 / 36, "malignant (3)": 1}
# Size terciles of the 6 areas .04 .09 .16 .25 .36 .49 (numpy's linear quantile: position
# (n - 1) * p): 5/3 -> .09 + (2/3)(.16 - .09) = 0.136667; 10/3 -> .25 + (1/3)(.36 - .25) = 0.286667.
EDGES = (0.09 + (2 / 3) * 0.07, 0.25 + (1 / 3) * 0.11)
SIZE = {"small": ("benign (1)", "benign (2)"), "medium": ("benign (3)", "malignant (1)"),
        "large": ("malignant (2)", "malignant (3)")}
CLASSES = {"benign": ("benign (1)", "benign (2)", "benign (3)"),
           "malignant": ("malignant (1)", "malignant (2)", "malignant (3)")}
MISSED = {"benign (2)", "malignant (2)"}


def _write_busi(root: Path, cases=CASES) -> None:
    for stem, cls, ident, gt, _ in cases:
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((SIDE * SCALE, SIDE * SCALE), 10 * ident, np.uint8)).save(root / cls / f"{stem}.png")
        Image.fromarray(_up(gt).astype(np.uint8) * 255).save(root / cls / f"{stem}_mask.png")


def _fake_model(cases=CASES):
    """predict_fn: 0.9 on the case's predicted pixels, 0.1 elsewhere (found by the image value),
    at the written images' size (the drawing upscaled by SCALE)."""
    maps = {ident: _up(np.where(pred, 0.9, 0.1).astype(np.float32)) for _, _, ident, _, pred in cases}
    return lambda images: [maps[int(im[0, 0, 0]) // 10].copy() for im in images]


@pytest.fixture
def busi(tmp_path):
    root = tmp_path / "busi"
    _write_busi(root)
    return root


def _entry_mean(stems, table):
    return sum(table[s] for s in stems) / len(stems)


# ----------------------------------------------------------------------------- the figures


def test_class_size_missed_and_phantom_figures_match_the_hand_computation(busi):
    examples = list_examples(str(busi), "busi", include_normal=True)
    result = eval_lib.evaluate(_fake_model(), examples, protocols=("fixed", "paper_oracle"),
                               n_bootstrap=0, batch_size=3)
    s = result.summaries["fixed"]["strata"]
    assert s["found_dice"] == 0.1 and s["class_source"] == "the dataset's class folders"
    # All 6 lesions: missed benign (2) and malignant (2) -> 2 of 6, found rate 4/6.
    assert s["lesions"]["n_lesions"] == 6 and s["lesions"]["n_missed"] == 2
    assert s["lesions"]["found_rate"] == pytest.approx(4 / 6)
    assert s["lesions"]["mean"]["dice"] == pytest.approx(sum(DICE.values()) / 6)
    # Two classes; "normal" holds no lesion, so it is no class stratum.
    assert list(s["class"]) == ["benign", "malignant"] and s["classes_absent"] == []
    for cls, stems in CLASSES.items():
        e = s["class"][cls]
        # benign: Dice (1 + 0 + 2/3)/3 = 5/9, Jaccard (1 + 0 + 1/2)/3 = 1/2; 1 of 3 missed.
        # malignant: Dice (10/11 + 2/37 + 1)/3, Jaccard (5/6 + 1/36 + 1)/3; 1 of 3 missed.
        assert e["n_lesions"] == 3 and e["n_missed"] == 1 and e["found_rate"] == pytest.approx(2 / 3)
        assert e["mean"]["dice"] == pytest.approx(_entry_mean(stems, DICE))
        assert e["mean"]["jaccard"] == pytest.approx(_entry_mean(stems, JACCARD))
    assert s["class"]["benign"]["mean"]["dice"] == pytest.approx(5 / 9)
    assert s["class"]["benign"]["mean"]["jaccard"] == pytest.approx(1 / 2)
    # Three size bins with the hand edges; each holds 2 lesions.
    assert s["size_edges"] == pytest.approx(list(EDGES))
    assert list(s["size"]) == ["small", "medium", "large"]
    for name, stems in SIZE.items():
        e = s["size"][name]
        assert e["n_lesions"] == 2 and e["n_missed"] == len(MISSED & set(stems))
        assert e["mean"]["dice"] == pytest.approx(_entry_mean(stems, DICE))
        assert e["mean"]["jaccard"] == pytest.approx(_entry_mean(stems, JACCARD))
    assert s["size"]["medium"]["mean"]["jaccard"] == pytest.approx(2 / 3)  # (1/2 + 5/6)/2
    # The 2 normal images: normal (1) has 2 predicted pixels, normal (2) none -> 1 of 2.
    assert s["lesion_free"]["n_images"] == 2 and s["lesion_free"]["n_with_prediction"] == 1
    assert s["lesion_free"]["share"] == 0.5
    # The oracle: on a lesion-free image every pixel is predicted (F1 is 0 at every threshold,
    # the lowest wins) -> 2 of 2. benign (2) at 0.1 predicts all 100 drawn px: Dice 18/109 = 0.165 and
    # malignant (2) at 0.1: Dice 72/136 = 0.53, both found -> 0 of 6 missed.
    o = result.summaries["paper_oracle"]["strata"]
    assert o["lesion_free"]["n_with_prediction"] == 2 and o["lesion_free"]["share"] == 1.0
    assert o["lesions"]["n_missed"] == 0 and o["lesions"]["found_rate"] == 1.0
    assert o["size_edges"] == s["size_edges"]  # the ground truth's, whatever the protocol


def test_every_interval_resamples_the_groups(busi):
    examples = list_examples(str(busi), "busi", include_normal=True)
    # benign (1) and (2) are copies of one original, as are the two normal images.
    groups = {ex.stem: ex.stem for ex in examples}
    groups.update({"benign (2)": "benign (1)", "normal (2)": "normal (1)"})
    grouped = eval_lib.evaluate(_fake_model(), examples, protocols=("fixed",), n_bootstrap=500,
                                groups=groups).summaries["fixed"]["strata"]
    # "small" = benign (1) (Dice 1, found) + benign (2) (Dice 0, missed): one group, so every
    # resample draws both, and its mean is always 1/2: the interval is [0.5, 0.5].
    small = grouped["size"]["small"]
    assert small["ci95"]["dice"] == [0.5, 0.5] and small["ci95"]["jaccard"] == [0.5, 0.5]
    assert small["found_rate_ci95"] == [0.5, 0.5]
    assert grouped["lesion_free"]["share_ci95"] == [0.5, 0.5]  # 1 of 2, one group
    # Resampled one by one, the two images give 0, 1/2 or 1 (each all-0 or all-1 with
    # probability 1/4): the 2.5% and 97.5% quantiles of 500 resamples are 0 and 1.
    single = eval_lib.evaluate(_fake_model(), examples, protocols=("fixed",), n_bootstrap=500,
                               ).summaries["fixed"]["strata"]
    assert single["size"]["small"]["ci95"]["dice"] == [0.0, 1.0]
    assert single["lesion_free"]["share_ci95"] == [0.0, 1.0]
    # Intervals hold their means.
    for e in (single["lesions"], *single["class"].values(), *single["size"].values()):
        lo, hi = e["ci95"]["dice"]
        assert lo <= e["mean"]["dice"] <= hi
        lo, hi = e["found_rate_ci95"]
        assert lo <= e["found_rate"] <= hi


def test_size_edges_and_bins_by_hand():
    # 3 areas: positions 2/3 and 4/3 -> .1 + (2/3)(.2 - .1) and .2 + (1/3)(.6 - .2).
    low, high = strata.size_edges([0.1, 0.2, 0.6, 0.0])  # the lesion-free 0.0 is left out
    assert (low, high) == pytest.approx((0.1 + 0.2 / 3, 0.2 + 0.4 / 3))
    assert [strata.size_bin(a, (low, high)) for a in (0.1, low, 0.2, high, 0.6)] == \
        ["small", "small", "medium", "medium", "large"]
    assert strata.size_edges([0.1, 0.2]) is None  # three bins need three lesions
    assert strata.lesion_area(_block(0, 0, 3, 3)) == 0.09


# ----------------------------------------------------------------------------- lesion class


def _examples(stems):
    return [Example(s, f"{s}.png", (f"{s}.png",)) for s in stems]


def test_the_busi_release_numbering_and_the_paper_split_has_no_malignant_lesion(tmp_path):
    # originals 1..437 benign, 438..647 malignant; copy i + 647k has original i's class
    expected = {"1": "benign", "437": "benign", "438": "malignant", "647": "malignant",
                "648": "benign",        # 1 + 647
                "1084": "benign",       # 437 + 647
                "1085": "malignant",    # 438 + 647
                "3235": "malignant"}    # 647 + 4 * 647, the last copy
    assert {s: strata.busi_release_class(s) for s in expected} == expected
    assert [strata.busi_release_class(s) for s in ("0", "3236", "07", "benign (1)")] == [None] * 4
    labels = strata.resolve_classes(_examples(expected), layout="processed", root=tmp_path / "BUSI")
    assert labels.known and dict(labels.by_stem) == expected and labels.source == strata.RELEASE_RULE
    # The paper's 80 BUSI test images, 1..80: all benign, and the output says so.
    paper = strata.resolve_classes(_examples(strata.PAPER_TEST_STEMS), layout="processed",
                                   root=str(tmp_path / "BUSI") + "/")
    rows = [{"stem": s, "class": paper.of(s), "lesion_area": 0.1, "dice": 0.9, "jaccard": 0.8,
             "TP": 9, "FP": 1} for s in strata.PAPER_TEST_STEMS]
    s = strata.summarize_strata(rows, paper, n_bootstrap=0)
    assert list(s["class"]) == ["benign"] and s["class"]["benign"]["n_lesions"] == 80
    assert s["classes_absent"] == ["malignant"]
    assert "  no malignant lesion among the scored images" in strata.format_table(s, "fixed")


def test_unknown_classes_are_said_not_raised(tmp_path):
    udiat = strata.resolve_classes(_examples(["000001"]), layout="udiat", root=tmp_path)
    assert not udiat.known and "lesion class unknown" in udiat.source and "--labels" in udiat.source
    odd = strata.resolve_classes(_examples(["1", "x"]), layout="processed", root=tmp_path / "BUSI")
    assert not odd.known and "['x']" in odd.source
    rows = [{"stem": "000001", "class": None, "lesion_area": 0.2, "dice": 0.5, "jaccard": 1 / 3,
             "TP": 1, "FP": 1}]
    s = strata.summarize_strata(rows, udiat, n_bootstrap=0)
    assert s["class"] == {} and s["class_source"] is None and s["class_unknown"] == udiat.source
    table = strata.format_table(s, "fixed")
    assert f"  {udiat.source}" in table and "  no size terciles: fewer than 3 lesions" in table


def test_a_labels_file_overrides_the_folders_and_its_problems_name_it(tmp_path):
    examples = _examples(["a", "b"])
    good = tmp_path / "labels.csv"
    good.write_text("stem,class\na, malignant\nb,benign\n\nextra,benign\n")
    labels = strata.resolve_classes(examples, labels_path=good)
    assert dict(labels.by_stem) == {"a": "malignant", "b": "benign"} and str(good) in labels.source
    bad = {"missing.csv": ("a,benign\n", "no class for 1 of the 2 evaluated image(s), e.g. ['b']"),
           "short.csv": ("a,benign\nb\n", "line 2: expected 'stem,class'"),
           "twice.csv": ("a,benign\na,malignant\nb,benign\n", "line 2: stem 'a' is given class"),
           "empty.csv": ("\n", "no 'stem,class' rows")}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(strata.LabelsError, match=r"^" + str(tmp_path / name)) as info:
            strata.resolve_classes(examples, labels_path=tmp_path / name)
        assert message in str(info.value)
    with pytest.raises(strata.LabelsError, match="cannot read the labels file"):
        strata.resolve_classes(examples, labels_path=tmp_path / "nowhere.csv")


# ----------------------------------------------------------------------------- overlays


def test_the_overlays_grid_worst_first(busi, tmp_path):
    examples = list_examples(str(busi), "busi", include_normal=True)
    dice = {**DICE, "normal (1)": 0.0, "normal (2)": math.nan}  # phantom: Dice 0; clean: undefined
    # sorted by (Dice, stem), NaN skipped
    assert viz.worst_cases(dice, 3) == [("worst 1", "benign (2)"), ("worst 2", "normal (1)"),
                                        ("worst 3", "malignant (2)")]
    heights = {}
    for order in eval_lib.OVERLAY_ORDERS:
        out = tmp_path / order
        eval_lib.evaluate(_fake_model(), examples, protocols=("fixed",), n_bootstrap=0,
                          overlay_dir=out, overlays_order=order)
        heights[order] = Image.open(out / eval_lib.GRID_FILE).size[1]
    # case_grid's height: 18 (header) + rows * (18 + image height + 4) + 4, the image height
    # being SIDE * SCALE (was 10, the unscaled side). "worst": the 7 images with a defined Dice
    # (fewer than WORST_ROWS = 12); "cases": best, median, worst.
    row = 18 + SIDE * SCALE + 4
    assert heights == {"worst": 18 + 7 * row + 4, "cases": 18 + 3 * row + 4}
    from hanet_jax.eval import cli  # its help names the number of rows without importing evaluate

    assert f"the {eval_lib.WORST_ROWS} lowest-Dice images" in " ".join(cli.__doc__.split())
    with pytest.raises(eval_lib.EvalError, match="overlays order"):
        eval_lib.evaluate(_fake_model(), examples, overlays_order="best")


# ----------------------------------------------------------------------------- eval.py


def _cli():
    spec = importlib.util.spec_from_file_location("eval_cli", ROOT / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_checkpoint(monkeypatch):
    """eval.py with load_bundle and Predictor replaced by the fake model of CASES."""

    class FakePredictor:
        def __init__(self, bundle, batch_size=8, tta=False):
            self.model = _fake_model()

        def __call__(self, images):
            return self.model(images)

    import hanet_jax.checkpoints.loading
    import hanet_jax.inference.predictor

    monkeypatch.setattr(hanet_jax.checkpoints.loading, "load_bundle",
                        lambda d: Bundle(types.SimpleNamespace(variant="baseline"), {},
                                         (SIDE * SCALE, SIDE * SCALE), {}))  # the written images' size
    monkeypatch.setattr(hanet_jax.inference.predictor, "Predictor", FakePredictor)


def test_eval_py_prints_the_table_and_writes_strata_and_csv_columns(busi, tmp_path, fake_checkpoint, capsys):
    out, rows_csv = tmp_path / "r.json", tmp_path / "rows.csv"
    rc = _cli().main(["--checkpoint", str(tmp_path / "ckpt"), "--data_dir", str(busi), "--layout", "busi",
                      "--split", "train", "--include_normal", "--protocol", "both", "--out", str(out),
                      "--per_image", str(rows_csv), "--bootstrap", "200"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    report = json.loads(out.read_text())
    assert report["n_images"] == 8 and report["data"]["include_normal"] is True
    for protocol in ("fixed", "paper_oracle"):
        s = report["protocols"][protocol]["strata"]
        assert s["class_source"] == "the dataset's class folders" and s["classes_absent"] == []
        assert set(s["class"]) == {"benign", "malignant"} and set(s["size"]) == set(strata.SIZE_BINS)
    fixed = report["protocols"]["fixed"]
    assert list(fixed)[:3] == ["threshold", "threshold_source", "postprocess"]  # existing keys kept
    assert fixed["strata"]["lesions"]["n_missed"] == 2
    # The table: "missed N of M (share% [CI])", the phantom line and the printed edges.
    lines = printed.out.splitlines()
    assert any(line.startswith("  all lesions") and "2 of 6 (33.3% [" in line for line in lines), printed.out
    assert "  1 of 2 lesion-free images with a predicted lesion (50.0% [" in printed.out
    assert "  2 of 2 lesion-free images with a predicted lesion (100.0% [" in printed.out  # the oracle
    assert "edges 13.67% and 28.67% of the image" in printed.out  # 0.136667, 0.286667
    assert "  class from the dataset's class folders" in printed.out
    # The per-image CSV: class and lesion_area columns (lesion-free: the normal class, area 0).
    header = rows_csv.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["class", "lesion_area"]
    rows = {(r["stem"], r["protocol"]): r for r in read_per_image_csv(rows_csv)}
    assert rows[("malignant (2)", "fixed")]["class"] == "malignant"
    assert rows[("malignant (2)", "fixed")]["lesion_area"] == 0.36
    assert rows[("normal (1)", "paper_oracle")]["lesion_area"] == 0.0


def test_eval_py_labels_problems_are_one_line_and_exit_2(busi, tmp_path, capsys):
    base = ["--checkpoint", str(tmp_path / "ckpt"), "--data_dir", str(busi), "--layout", "busi",
            "--split", "train", "--out", str(tmp_path / "r.json")]
    partial = tmp_path / "partial.csv"
    partial.write_text("benign (1),benign\n")
    for path, message in ((partial, "no class for 5 of the 6 evaluated image(s)"),
                          (tmp_path / "nowhere.csv", "cannot read the labels file")):
        assert _cli().main(base + ["--labels", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --labels {path}") and message in err and err.count("\n") == 1
    assert _cli().main(base + ["--overlays_order", "worst"]) == 2
    assert "give --overlays DIR too" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


# ----------------------------------------------------------------------------- results tables


def _protocol(dice, strata_entry=None):
    entry = {"threshold": 0.5, "threshold_source": "val", "mean": {"dice": dice, "jaccard": dice - 0.1},
             "ci95": {"dice": [dice - 0.05, dice + 0.05], "jaccard": [0, 1]}}
    return {**entry, **({"strata": strata_entry} if strata_entry else {})}


def _lesions(n, missed, dice, found_ci=(0.7, 0.9)):
    return {"n_lesions": n, "n_missed": missed, "mean": {"dice": dice, "jaccard": dice - 0.1},
            "ci95": {"dice": [dice - 0.02, dice + 0.02], "jaccard": [0, 1]},
            "found_rate": 1 - missed / n, "found_rate_ci95": list(found_ci)}


def _reproduce_workdir(path: Path, with_strata: bool) -> Path:
    path.mkdir()
    s = None
    if with_strata:
        s = {"found_dice": 0.1, "lesions": _lesions(10, 2, 0.7), "class_source": strata.RELEASE_RULE,
             "class": {"benign": _lesions(6, 1, 0.75), "malignant": _lesions(4, 1, 0.6, (0.5, 1.0))},
             "classes_absent": [], "size_edges": [0.05, 0.1], "size": {},
             "lesion_free": {"n_images": 4, "n_with_prediction": 1, "share": 0.25, "share_ci95": [0.0, 0.5]}}
    protocols = {"fixed": _protocol(0.7, s), "paper_oracle": _protocol(0.8, s)}
    files = {
        "eval_test.json": {"n_images": 14, "evaluated_at": "2026-12-01T00:00:00+00:00", "protocols": protocols,
                           "bootstrap": {"over": "near-duplicate groups", "n_groups": 5}},
        "eval_val.json": {"n_images": 8, "protocols": {"fixed": _protocol(0.65, s)}},
        "summary.json": {"epochs": 3, "wall_seconds": 600.0, "best_step": 30},
        "config.json": {"model": {"variant": "full", "image_size": 128}, "batch_size": 16, "seed": 0},
        "reproduce_times.json": {"train_command_seconds": 600, "total_seconds": 660},
    }
    for name, payload in files.items():
        (path / name).write_text(json.dumps(payload))
    return path


def _results_table(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "results_table.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_results_tables_have_class_rows_and_a_missed_column(tmp_path):
    proc = _results_table("--busi", _reproduce_workdir(tmp_path / "new", True))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "| missed lesions (Dice < 0.1) [95% CI] |" in text
    # missed 2 of 10 = 20.0%; the missed share's interval is 1 - the found rate's: [10.0, 30.0]
    assert "| BUSI | ours, fixed (threshold 0.50 from val) | test, 14 | 0.700 [0.650, 0.750] | 0.600 | 2 of 10 (20.0% [10.0, 30.0]) |" in text
    assert "| BUSI | ours, fixed, benign lesions | test, 6 | 0.750 [0.730, 0.770] | 0.650 | 1 of 6 (16.7% [10.0, 30.0]) |" in text
    assert "| BUSI | ours, fixed, malignant lesions | test, 4 | 0.600 [0.580, 0.620] | 0.500 | 1 of 4 (25.0% [0.0, 50.0]) |" in text
    assert "| BUSI | paper (oracle; test images also in training) | — | 0.973 | 0.948 | — |" in text
    assert "Fixed protocol, test: 1 of 4 lesion-free images with a predicted lesion (25.0% [0.0, 50.0])" in text
    # The paper's test images, release numbers 1..80, are all benign (the numbering rule).
    assert "The paper's 80 BUSI test images (release numbers 1-80) are 80 benign and 0 malignant" in text
    # An older eval JSON, without strata: dashes, no error.
    proc = _results_table("--busi", _reproduce_workdir(tmp_path / "old", False))
    assert proc.returncode == 0, proc.stderr
    assert "| BUSI | ours, fixed (threshold 0.50 from val) | test, 14 | 0.700 [0.650, 0.750] | 0.600 | — |" in proc.stdout
    assert "| BUSI | ours, fixed, malignant lesions | test, — | — | — | — |" in proc.stdout
