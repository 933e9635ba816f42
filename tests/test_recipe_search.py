"""scripts/recipe_search.py: its table shows what each cumulative arm changed and bought."""

import subprocess
import sys
from pathlib import Path

from _train_helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
load_module(ROOT / "scripts" / "results_table.py", "results_table")  # recipe_search imports it
recipe_search = load_module(ROOT / "scripts" / "recipe_search.py", "recipe_search")


def _result(dice):
    return {"dice": dice, "ci": [dice - 0.03, dice + 0.03], "jaccard": dice - 0.1, "n": 400,
            "best_val_loss": 0.5, "minutes": 15.0}


def test_table_lists_each_arms_own_change_and_its_delta():
    text = recipe_search.table("busi", "96px_8ep", {"release": _result(0.70), "+cosine": _result(0.72),
                                                    "+augment": _result(0.715)}, "CMD")
    lines = text.splitlines()
    assert lines[2].startswith("| release | — | 0.700 [0.670, 0.730] | 0.600 |  |")
    assert lines[3].startswith("| +cosine | optimizer.schedule=cosine | 0.720") and "| +0.020 |" in lines[3]
    assert "data.augment.affine=True, data.augment.brightness_contrast=True" in lines[4]
    assert "optimizer.schedule" not in lines[4] and "| -0.005 |" in lines[4]
    assert "400 validation images" in text and "`CMD`" in text


def test_the_variant_ablation_compares_each_variant_with_the_full_model():
    text = recipe_search.table("busi", "96px_8ep", {"full": _result(0.75), "no_tam": _result(0.74),
                                                    "baseline": _result(0.77)}, "CMD", "variants")
    lines = text.splitlines()
    assert "changes from the first arm" in lines[0]
    assert lines[2].startswith("| full | — | 0.750")
    # Each row names only its own variant and is measured against full, not the row above.
    assert lines[3].startswith("| no_tam | model.variant=no_tam | 0.740") and "| -0.010 |" in lines[3]
    assert lines[4].startswith("| baseline | model.variant=baseline | 0.770") and "| +0.020 |" in lines[4]
    # The ablation's arms are the default recipe's (the recipe study's last arm).
    assert all(arm.items() >= recipe_search.ARMS["+bce_dice"].items()
               for arm in recipe_search.VARIANT_ARMS.values())


def test_arms_of_another_study_are_refused_by_name():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_search.py"), "--dataset",
                           "busi", "--data_root", "/nowhere", "--out", "/tmp/unused", "--study",
                           "variants", "--arms=no_tam,+cosine"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--arms +cosine: not arms of --study variants" in proc.stderr


def test_a_missing_dataset_folder_is_named():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_search.py"), "--dataset",
                           "udiat", "--data_root", "/nowhere", "--out", "/tmp/unused"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/nowhere/UDIAT/train/images does not exist" in proc.stderr


def test_the_studies_markers_are_in_docs_results_md_and_not_in_the_readme():
    doc, readme = (ROOT / "docs" / "results.md").read_text(), (ROOT / "README.md").read_text()
    for _, _, (begin, end) in recipe_search.STUDIES.values():
        assert doc.count(begin) == 1 and doc.count(end) == 1 and doc.index(begin) < doc.index(end)
        assert begin not in readme and end not in readme


def test_the_spend_studys_first_arm_is_the_reproduce_runs_config():
    """`--study spend --budget cpu2h`'s 128px arm trains exactly configs/<dataset>.py:cpu2h (what
    scripts/reproduce.sh trains); its other arms change only what they name."""
    from hanet_jax.train import recipes

    for dataset in ("busi", "udiat"):
        reproduce = recipes.dataset_recipe(dataset, "cpu2h").to_dict()
        for name, arm in recipe_search.SPEND_ARMS.items():
            config = recipes.dataset_recipe(dataset, "release")
            config.update_from_flattened_dict({**recipe_search.BUDGETS["cpu2h"], **arm})
            flat, want = (recipes.config_utils.flatten(c) for c in (config.to_dict(), reproduce))
            changed = {k for k in flat if flat[k] != want[k]}
            assert changed == {k for k in arm if k not in recipes.BEYOND_RELEASE}, name


def test_a_joint_arm_shows_each_sources_validation_dice():
    pooled = {**_result(0.80), "by_source": {"busi": 0.78, "udiat": 0.83}}
    text = recipe_search.table("joint", "96px_8ep", {"equal": pooled, "busi_x3.2": _result(0.81)},
                               "CMD", "weights")
    lines = text.splitlines()
    assert lines[2].startswith("| equal | — | 0.800 [0.770, 0.830] (BUSI 0.780 UDIAT 0.830) |")
    assert lines[3].startswith("| busi_x3.2 | data.sources.busi.weight=3.2 | 0.810 [0.780, 0.840] |")


def test_studies_refuse_a_dataset_or_budget_they_do_not_fit(tmp_path):
    for args, error in ((["--dataset", "joint", "--study", "spend"], "--study weights needs"),
                        (["--dataset", "busi", "--study", "weights"], "--study weights needs"),
                        (["--dataset", "busi", "--study", "spend"], "give --budget cpu2h")):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_search.py"), *args,
                               "--data_root", str(tmp_path), "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and error in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_search.py"), "--dataset",
                           "joint", "--study", "weights", "--data_root", str(tmp_path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{tmp_path}/BUSI/train/images does not exist" in proc.stderr
