"""scripts/cross_table.py: the 3x2 generalisation table and the paired tests come from the
`reproduce.sh cross` outputs, and the tests run on per-group means."""

import json
from pathlib import Path

import numpy as np
from _train_helpers import load_module

from hanet_jax.eval.metrics import write_per_image_csv

ROOT = Path(__file__).resolve().parents[1]
results_table = load_module(ROOT / "scripts" / "results_table.py", "results_table")
cross_table = load_module(ROOT / "scripts" / "cross_table.py", "cross_table")


def _rows(dice_by_stem: dict, group_of) -> list[dict]:
    return [{"stem": s, "protocol": protocol, "threshold": 0.5, "TP": 1, "FP": 0, "FN": 0, "TN": 1,
             "jaccard": d, "dice": d, "sensitivity": 1, "specificity": 1, "precision": 1,
             "accuracy": 1, "group": group_of(s)}
            for protocol in ("fixed", "paper_oracle") for s, d in dice_by_stem.items()]


def _report(path: Path, dice: float):
    path.write_text(json.dumps({"protocols": {"fixed": {"mean": {"dice": dice},
                                                         "ci95": {"dice": [dice - 0.05, dice + 0.04]}}}}))


def _workdir(tmp_path: Path) -> Path:
    """12 test originals per dataset, 5 copies each; the joint model is 0.02 better on every
    copy of 10 originals and 0.01 worse on 2."""
    w = tmp_path / "w"
    (w / "cross").mkdir(parents=True)
    val = {"busi": {"best_val_dice": 0.79}, "udiat": {"best_val_dice": 0.81},
           "joint": {"best_val_dice": 0.8, "best_val_dice_by_source": {"busi": 0.78, "udiat": 0.83}}}
    for model, minutes in (("busi", 30), ("udiat", 35), ("joint", 70)):
        (w / model).mkdir()
        (w / model / "summary.json").write_text(json.dumps({"wall_seconds": minutes * 60.0,
                                                            **val[model]}))
    rng = np.random.default_rng(0)
    stems = [f"{g}_{c}" for g in range(12) for c in range(5)]
    base = {s: float(rng.uniform(0.5, 0.9)) for s in stems}
    joint = {s: d + (0.02 if int(s.split("_")[0]) < 10 else -0.01) for s, d in base.items()}
    for dataset in ("busi", "udiat"):
        other = "udiat" if dataset == "busi" else "busi"
        for model, scores in ((dataset, base), ("joint", joint), (other, base)):
            out = w / "cross" / f"{model}_on_{dataset}"
            write_per_image_csv(out.with_suffix(".csv"), _rows(scores, lambda s: s.split("_")[0]))
            _report(out.with_suffix(".json"), float(np.mean(list(scores.values()))))
    return w


def test_the_table_has_every_cell_and_the_paired_test_counts_originals(tmp_path):
    w = _workdir(tmp_path)
    text = cross_table.table(w)
    lines = text.splitlines()
    assert lines[0] == "| model | BUSI test Dice [95% CI] | UDIAT test Dice [95% CI] | training min |"
    assert lines[2].startswith("| BUSI only | 0.") and lines[2].endswith("| 30 |")
    assert lines[4].startswith("| joint (BUSI + UDIAT) |") and lines[4].endswith("| 70 |")
    assert "–" not in "\n".join(lines[2:5])
    busi = next(line for line in lines if line.startswith("- BUSI test:"))
    # 12 groups, not 60 images: the per-group test sees 12 pairs; the per-image one 60
    assert "over 12 groups (60 images;" in busi and "median group difference +0.020" in busi
    p_group = float(busi.split("p = ")[1].split(" ")[0])
    p_image = float(busi.split("p = ")[2].rstrip(")"))
    assert p_image < p_group < 0.05


def test_missing_outputs_leave_a_dash_and_the_doc_is_written_between_markers(tmp_path):
    w = _workdir(tmp_path)
    (w / "cross" / "joint_on_udiat.json").unlink()
    (w / "cross" / "joint_on_udiat.csv").unlink()
    doc = tmp_path / "results.md"
    doc.write_text("before\n<!-- cross:begin -->\nold\n<!-- cross:end -->\nafter\n")
    assert cross_table.main(["--workdir", str(w), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n<!-- cross:begin -->\n| model |") and text.endswith("after\n")
    assert "old" not in text and "| joint (BUSI + UDIAT) | 0." in text and " | – | 70 |" in text
    assert "- UDIAT: not yet scored" in text


def test_the_validation_arm_sets_joint_against_single_per_source(tmp_path):
    lines = cross_table.table(_workdir(tmp_path)).splitlines()
    start = lines.index("| model | BUSI val Dice | UDIAT val Dice |")
    # a single run has its own dataset's validation Dice only; the joint run one per source
    assert lines[start + 2:start + 5] == ["| BUSI only | 0.790 | – |", "| UDIAT only | – | 0.810 |",
                                          "| joint (BUSI + UDIAT) | 0.780 | 0.830 |"]
