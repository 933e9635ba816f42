"""scripts/recipe_search.py: its table shows what each cumulative arm changed and bought."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import recipe_search  # noqa: E402


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


def test_a_missing_dataset_folder_is_named():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_search.py"), "--dataset",
                           "udiat", "--data_root", "/nowhere", "--out", "/tmp/unused"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/nowhere/UDIAT/train/images does not exist" in proc.stderr
