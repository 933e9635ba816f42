"""scripts/results_table.py: the docs' results tables come from the reproduce outputs, nothing else."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results_table.py"


def _entry(dice, jaccard, threshold=0.5):
    return {"threshold": threshold, "threshold_source": "val", "mean": {"dice": dice, "jaccard": jaccard},
            "ci95": {"dice": [dice - 0.05, dice + 0.04], "jaccard": [0, 1]}}


def _workdir(path: Path, dice: float) -> Path:
    path.mkdir()
    protocols = {"fixed": _entry(dice, dice - 0.1, 0.45), "paper_oracle": _entry(dice + 0.1, dice)}
    files = {
        "eval_test.json": {"n_images": 97, "evaluated_at": "2026-11-29T23:30:00+00:00",
                           "protocols": protocols, "protocols_tta": protocols,
                           "bootstrap": {"over": "near-duplicate groups", "n_groups": 20}},
        "eval_val.json": {"n_images": 80, "protocols": {"fixed": _entry(0.8, 0.7)}},
        "summary.json": {"epochs": 12, "wall_seconds": 6000.0, "best_step": 1100},
        "config.json": {"model": {"variant": "full", "image_size": 128}, "batch_size": 16, "seed": 0},
        "reproduce_times.json": {"train_command_seconds": 6100, "total_seconds": 6500},
    }
    for name, payload in files.items():
        (path / name).write_text(json.dumps(payload))
    return path


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_each_table_is_written_between_its_markers_from_the_json(tmp_path):
    busi, udiat = _workdir(tmp_path / "b", 0.777), _workdir(tmp_path / "u", 0.654)
    config = json.loads((udiat / "config.json").read_text())
    config["optimizer"] = {"schedule": "cosine", "ema_decay": 0.998}
    (udiat / "config.json").write_text(json.dumps(config))
    doc = tmp_path / "results.md"
    doc.write_text("intro\n<!-- results:busi:begin -->\nSTALE\n<!-- results:busi:end -->\nmid\n"
                      "<!-- results:udiat:begin -->\nKEPT\n<!-- results:udiat:end -->\noutro\n")
    proc = _run("--busi", busi, "--doc", doc)
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text()
    # Only BUSI's table is rewritten: UDIAT's block keeps what it had.
    assert text.startswith("intro\n<!-- results:busi:begin -->\n| data |") and "STALE" not in text
    assert text.endswith("mid\n<!-- results:udiat:begin -->\nKEPT\n<!-- results:udiat:end -->\noutro\n")
    assert "| BUSI | ours, fixed (threshold 0.45 from val) | test, 97 | 0.777 [0.727, 0.817] | 0.677 |" in text
    assert "| BUSI | paper (oracle; test images also in training) | — | 0.973 | 0.948 |" in text
    assert "test CIs resample its 20 near-duplicate groups" in text
    assert "full, 128px, batch 16, 12 epochs, plateau schedule, bce_jaccard loss, seed 0; training 100 min (summed over resumes), evaluation 7 min" in text
    assert f"Written by `python scripts/results_table.py --busi {busi}` from outputs evaluated on 2026-11-29." in text
    proc = _run("--busi", busi, "--udiat", udiat, "--doc", doc)
    assert proc.returncode == 0, proc.stderr
    text = doc.read_text()
    assert "KEPT" not in text and text.count("| data |") == 2
    assert "| UDIAT | ours, paper_oracle + flip TTA | test, 97 | 0.754 [0.704, 0.794] | 0.654 |" in text
    assert proc.stdout.count("| data |") == 2
    assert "batch 16, 12 epochs, cosine schedule, bce_jaccard loss, weights' moving average 0.998, seed 0" in text


def test_missing_outputs_and_markers_are_named(tmp_path):
    proc = _run("--busi", tmp_path / "nowhere")
    assert proc.returncode == 2 and "nowhere/eval_test.json" in proc.stderr
    doc = tmp_path / "results.md"
    doc.write_text("no markers\n")
    proc = _run("--busi", _workdir(tmp_path / "b", 0.7), "--doc", doc)
    assert proc.returncode == 2 and "markers" in proc.stderr
    # One dataset's markers missing: nothing is written, not even the other's table.
    only_busi = "<!-- results:busi:begin -->\nOLD\n<!-- results:busi:end -->\n"
    doc.write_text(only_busi)
    proc = _run("--busi", tmp_path / "b", "--udiat", _workdir(tmp_path / "u", 0.7), "--doc", doc)
    assert proc.returncode == 2 and "<!-- results:udiat:begin -->" in proc.stderr
    assert doc.read_text() == only_busi


def test_outputs_without_evaluated_at_are_dated_by_the_file(tmp_path):
    busi = _workdir(tmp_path / "b", 0.7)
    test = json.loads((busi / "eval_test.json").read_text())
    del test["evaluated_at"]
    (busi / "eval_test.json").write_text(json.dumps(test))
    os.utime(busi / "eval_test.json", (1764460800, 1764460800))  # 2025-11-30 00:00 UTC
    proc = _run("--busi", busi)
    assert proc.returncode == 0, proc.stderr
    assert "from outputs evaluated on 2025-11-30." in proc.stdout


def test_reproduce_script_rejects_bad_arguments(tmp_path):
    script = ROOT / "scripts" / "reproduce.sh"
    usage = subprocess.run(["bash", str(script), "mnist", "x", "y"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    missing = subprocess.run(["bash", str(script), "busi", str(tmp_path), str(tmp_path / "w")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and f"{tmp_path}/BUSI/train/images does not exist" in missing.stderr


def test_the_fixed_rows_name_a_post_processing_chosen_on_val(tmp_path):
    busi = _workdir(tmp_path / "b", 0.777)
    test = json.loads((busi / "eval_test.json").read_text())
    test["protocols"]["fixed"].update(postprocess="largest_component", postprocess_source="val")
    (busi / "eval_test.json").write_text(json.dumps(test))
    proc = _run("--busi", busi)
    assert proc.returncode == 0, proc.stderr
    assert "| BUSI | ours, fixed (threshold 0.45 + largest component from val) | test, 97 |" in proc.stdout
    assert "fixed threshold and post-processing from val" in proc.stdout
    test["protocols"]["fixed"].update(postprocess="most_probable_component")
    (busi / "eval_test.json").write_text(json.dumps(test))
    proc = _run("--busi", busi)
    assert "| BUSI | ours, fixed (threshold 0.45 + most probable component from val) | test, 97 |" in proc.stdout


def test_the_note_counts_failed_test_images_from_the_per_image_csv(tmp_path):
    from hanet_jax.eval.metrics import write_per_image_csv
    busi = _workdir(tmp_path / "b", 0.777)

    def row(stem, protocol, dice, tp, fp):
        return {"stem": stem, "protocol": protocol, "threshold": 0.5, "TP": tp, "FP": fp, "FN": 5, "TN": 90,
                "jaccard": dice, "dice": dice, "sensitivity": 0, "specificity": 1, "precision": 0, "accuracy": 0.9}
    write_per_image_csv(busi / "eval_test.csv", [
        row("1", "fixed", 0.0, 0, 7), row("2", "fixed", 0.0, 0, 0), row("3", "fixed", 0.9, 9, 1),
        row("4", "fixed", 0.7, 7, 3), row("1", "paper_oracle", 0.0, 0, 9)])
    proc = _run("--busi", busi)
    assert proc.returncode == 0, proc.stderr
    assert ("Fixed protocol, test: 2 of 4 images score Dice < 0.1 (1 with the prediction wholly outside the "
            "lesion, 1 other); the rest average 0.800.") in proc.stdout


def test_the_note_gives_the_command_that_reproduces_the_row(tmp_path):
    from hanet_jax.train import recipes

    recipe = recipes.dataset_recipe("busi", "cpu2h")
    busi = _workdir(tmp_path / "b", 0.7)
    config = json.loads((busi / "config.json").read_text())
    config.update(batch_size=recipe.batch_size + 4, data={"root": "/data/hp/BUSI", "test_fraction": 0.2})
    config["model"]["encoder_blocks"] = [1, 2, 3, 4]
    (busi / "config.json").write_text(json.dumps(config))
    proc = _run("--busi", busi)
    assert proc.returncode == 0, proc.stderr
    # Only what differs from today's configs/busi.py:cpu2h; reproduce.sh sets the root and split.
    assert (f"Reproduce: `bash scripts/reproduce.sh busi /data/hp {busi} "
            f"--config.batch_size={recipe.batch_size + 4} "
            f"--config.model.encoder_blocks=(1,2,3,4)`." in proc.stdout)


def test_a_cross_validation_names_its_runs_and_the_out_of_fold_row(tmp_path):
    from hanet_jax.inference import ensemble
    from hanet_jax.checkpoints.format import write_meta

    cv = _workdir(tmp_path / "cv", 0.75)
    for fold, (epochs, wall, best) in enumerate(((10, 1200.0, 990), (9, 1300.0, 891))):
        run = cv / f"fold_{fold}"
        run.mkdir()
        write_meta(run, kind="workdir", model_cfg={"variant": "full"}, image_size=(128, 128))
        config = {"model": {"variant": "full", "image_size": 128}, "batch_size": 16, "seed": 0,
                  "num_epochs": 10, "data": {"folds": 2, "fold": fold}}
        (run / "config.json").write_text(json.dumps(config))
        (run / "summary.json").write_text(json.dumps({"epochs": epochs, "wall_seconds": wall,
                                                      "best_step": best}))
    (cv / "summary.json").unlink()  # a cross-validation's own dir holds no run
    ensemble.write(cv, ["fold_0", "fold_1"])
    proc = _run("--busi", cv)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert ("the mean of a 2-fold cross-validation's 2 runs, each full, 128px, batch 16, 10/9 epochs"
            in text)
    assert "training 42 min (summed over runs and resumes)" in text
    assert "at step 990/891" in text and "from val (out-of-fold)" in text
    assert "| BUSI | ours, fixed at 0.5, out-of-fold validation (each image by the run that held it out) | val, 80 |" in text
    assert f"`HANET_FOLDS=2 bash scripts/reproduce.sh busi DATA_ROOT {cv}`" in text


def test_docs_results_md_holds_the_markers_and_the_readme_none(tmp_path):
    from _train_helpers import load_module

    results_table = load_module(SCRIPT, "results_table")
    assert results_table.RESULTS_DOC == ROOT / "docs" / "results.md"
    assert results_table.COMMAND.parse(["--busi", "w"]).doc is None  # no --doc: print only
    doc, readme = (ROOT / "docs" / "results.md").read_text(), (ROOT / "README.md").read_text()
    for dataset in results_table.NAMES:
        begin, end = results_table.markers(dataset)
        assert doc.count(begin) == 1 and doc.count(end) == 1 and doc.index(begin) < doc.index(end)
        # No script writes the README: it holds none of the markers they write between.
        assert begin not in readme and end not in readme


def test_a_missing_doc_is_named(tmp_path):
    proc = _run("--busi", _workdir(tmp_path / "b", 0.7), "--doc", tmp_path / "nowhere.md")
    assert proc.returncode == 2 and "nowhere.md" in proc.stderr
