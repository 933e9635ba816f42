"""The compare CLI on two small per-image CSVs, checked against direct scipy calls."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from hanet_jax.eval.bootstrap import bootstrap_ci
from hanet_jax.eval.compare import main, rank_biserial
from hanet_jax.eval.metrics import METRIC_NAMES, read_per_image_csv, write_per_image_csv

DICE_A = [0.70, 0.65, 0.80, math.nan, 0.55, 0.90, 0.60, 0.75]
DICE_B = [0.74, 0.66, 0.79, 0.50, 0.62, 0.93, 0.61, 0.80]


def _rows(dice, stems, protocol="fixed"):
    rows = []
    for stem, d in zip(stems, dice):
        row = {"stem": stem, "protocol": protocol, "threshold": 0.5, "TP": 1, "FP": 0, "FN": 0, "TN": 1}
        row.update({m: 0.5 for m in METRIC_NAMES}, dice=d)
        rows.append(row)
    return rows


@pytest.fixture
def csvs(tmp_path):
    stems = [f"case{i:02d}" for i in range(len(DICE_A))]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    # A also holds oracle rows (ignored under --protocol fixed); B lists its stems in reverse.
    write_per_image_csv(a, _rows(DICE_A, stems) + _rows([0.99] * len(stems), stems, "paper_oracle"))
    write_per_image_csv(b, _rows(DICE_B[::-1], stems[::-1]))
    return a, b


def test_compare_matches_scipy(csvs, tmp_path, capsys):
    a, b = csvs
    out = tmp_path / "result.json"
    assert main([str(a), str(b), "--metric", "dice", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    keep = ~np.isnan(DICE_A)
    xa, xb = np.array(DICE_A)[keep], np.array(DICE_B)[keep]
    expected = scipy.stats.wilcoxon(xb, xa)
    assert r["n_pairs"] == 7 and r["n_dropped_nan"] == 1
    assert r["wilcoxon_statistic"] == pytest.approx(expected.statistic)
    assert r["p_value"] == pytest.approx(expected.pvalue)
    assert r["median_diff"] == pytest.approx(np.median(xb - xa))
    assert r["mean_a"] == pytest.approx(xa.mean()) and r["mean_b"] == pytest.approx(xb.mean())
    assert r["ci_a"] == pytest.approx(list(bootstrap_ci(xa)))
    assert r["rank_biserial"] == pytest.approx(rank_biserial(xb - xa))
    printed = capsys.readouterr().out
    # No groups in these CSVs: each image is its own sample, and the output says so.
    assert r["n_groups"] == 7 and "each image on its own" in r["groups"]
    assert "7 paired images in 7 groups" in printed and "1 dropped" in printed and "p = " in printed


def test_rank_biserial_by_hand():
    # |d| ranks: 0.1 -> 1, 0.2 -> 2.5, -0.2 -> 2.5, 0.4 -> 4; zero dropped.
    # R+ = 1 + 2.5 + 4 = 7.5, R- = 2.5 -> r = 5 / 10.
    assert rank_biserial([0.1, 0.2, -0.2, 0.4, 0.0]) == pytest.approx(0.5)
    assert rank_biserial([0.3, 0.1]) == 1.0
    assert math.isnan(rank_biserial([0.0, 0.0]))


def test_unpaired_stems_exit_2(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_per_image_csv(a, _rows([0.5, 0.6, 0.7], ["x", "y", "z"]))
    write_per_image_csv(b, _rows([0.5, 0.6, 0.7], ["x", "y", "w"]))
    assert main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "only in A ['z']" in err and "only in B ['w']" in err


def test_missing_protocol_and_duplicate_stems_exit_2(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_per_image_csv(a, _rows([0.5, 0.6], ["x", "x"]))
    write_per_image_csv(b, _rows([0.5, 0.6], ["x", "y"]))
    assert main([str(a), str(b)]) == 2
    assert "appears twice" in capsys.readouterr().err
    assert main([str(b), str(b), "--protocol", "paper_oracle"]) == 2
    assert "no rows with protocol 'paper_oracle'" in capsys.readouterr().err


def test_module_entry_point(csvs):
    a, b = csvs
    done = subprocess.run([sys.executable, "-m", "hanet_jax.eval.compare", str(a), str(b)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Wilcoxon signed-rank" in done.stdout


def _copied(tmp_path, copies: int, with_group_column: bool):
    """Ten originals, each scored on `copies` identical copies (the processed release's
    numbering: BUSI copy i + 647k of original i); B beats A on 7 of them."""
    a = np.linspace(0.5, 0.9, 10)
    b = a + np.array([0.05, 0.04, 0.03, 0.06, 0.025, 0.07, -0.012, -0.02, 0.01, -0.035])  # no tied |d|
    stems = [str(i + 647 * k) for k in range(copies) for i in range(1, 11)]
    da, db = np.tile(a, copies), np.tile(b, copies)
    rows_a, rows_b = _rows(da, stems), _rows(db, stems)
    if with_group_column:
        for row in rows_a + rows_b:
            row["group"] = f"g{(int(row['stem']) - 1) % 647 + 1}"
    write_per_image_csv(tmp_path / "a.csv", rows_a)
    write_per_image_csv(tmp_path / "b.csv", rows_b)
    return a, b, da, db


@pytest.mark.parametrize("group_args,with_column", [([], True), (["--group_by", "busi_release"], False)])
def test_copies_collapse_the_per_image_p_value_but_not_the_per_group_one(tmp_path, capsys, group_args,
                                                                          with_column):
    a, b, da, db = _copied(tmp_path, copies=5, with_group_column=with_column)
    out = tmp_path / "r.json"
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), *group_args, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    # One value per original: the test of the ten group means, as scipy gives it (p = 0.105).
    assert r["n_pairs"] == 50 and r["n_groups"] == 10
    assert r["p_value"] == pytest.approx(scipy.stats.wilcoxon(b, a).pvalue)
    assert r["p_value"] > 0.05
    # Counting each copy as a lesion of its own: the same data look significant (p = 1.5e-4).
    assert r["per_image"]["p_value"] == pytest.approx(scipy.stats.wilcoxon(db, da).pvalue)
    assert r["per_image"]["p_value"] < 1e-3
    printed = capsys.readouterr().out
    assert "over 10 groups" in printed and "for contrast only, per image (n = 50" in printed


def test_a_group_column_that_disagrees_between_files_is_an_error(tmp_path, capsys):
    _copied(tmp_path, copies=2, with_group_column=True)
    rows = read_per_image_csv(tmp_path / "b.csv")
    rows[0]["group"] = "other"
    write_per_image_csv(tmp_path / "b.csv", rows)
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    assert "has group" in capsys.readouterr().err
