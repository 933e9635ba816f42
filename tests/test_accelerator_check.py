"""`hanet-check-accelerator --small`: the accelerator check at 64 px with a tiny encoder, run on
the CPU in a process without TensorFlow (as on a fresh GPU host), so the command cannot rot."""

import json
import subprocess
import sys

import pytest
from _no_tensorflow import ROOT, env_without_tensorflow

pytestmark = pytest.mark.slow


def test_the_small_check_runs_every_part_without_tensorflow(tmp_path):
    out, cache = tmp_path / "check.json", tmp_path / "xla"
    env = env_without_tensorflow(tmp_path, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "hanet_jax.bench.accelerator_check", "--small",
                           "--out", str(out), "--cache_dir", str(cache)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result  # printed and written alike
    assert result["ok"] and result["small"] and result["image_size"] == 64
    assert result["platform"] == "cpu" and result["device_count"] >= 1
    assert result["compilation_cache"] == str(cache) and any(cache.iterdir())
    assert result["peak_flops_per_device"]["float32"] > 0
    for dtype in ("float32", "bfloat16"):
        step = result["train_step"][dtype]
        assert step["batch_size"] == 8 and step["images_per_s"] > 0 and step["compile_s"] > 0
        assert 0 < step["mfu"] < 1 and step["flops_per_image"] > 0 and step["loss_finite"]
    assert set(result["inference"]) == {"batch_1", "batch_8"}
    parity = result["parity"]
    assert parity["float32_highest_max_abs_diff"] < 1e-5  # the CPU against itself here
    assert parity["bfloat16_max_abs_diff"] < 0.1
    run = result["train_run"]
    assert run["loss_fell"] and run["checkpoint_written"] and run["resume_continued"]
    assert run["resumed_steps"] == 3 * run["steps_per_epoch"]
    paper = result["paper_recipe"]
    assert paper["steps_per_epoch"] == 259 and paper["hours_at_most"] > 0
