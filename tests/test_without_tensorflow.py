"""A host without TensorFlow (a GPU image with jax and CUDA, say) trains, resumes, evaluates and
predicts: each command runs in a subprocess in which `import tensorflow` fails
(tests/_no_tensorflow.py). The numpy feeder replaces tf.data there; tests/test_data_pipeline.py
shows that the two give identical batches."""

import json
import subprocess
import sys

import pytest
from _no_tensorflow import ROOT, env_without_tensorflow
from data_fixtures import write_processed

pytestmark = pytest.mark.slow

TINY = ["--config.model.image_size=32", "--config.model.encoder_blocks=(1,1,1,1)",
        "--config.data.n_train=16", "--config.data.n_val=8", "--config.num_overlays=1"]


def _run(args, env, timeout=600):
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "blocked by tests/_no_tensorflow.py" not in done.stderr
    return done


def test_train_resume_eval_and_predict_without_tensorflow(tmp_path):
    # the session's compilation cache (conftest) is in the environment: the resume, eval and
    # predict reuse the steps the first run compiled, as a user's second command would
    env = env_without_tensorflow(tmp_path, CUDA_VISIBLE_DEVICES="", HANET_CPU_DEVICES="1")
    probe = _run(["-c", "import importlib.util, sys\n"
                        "from hanet_jax.tensorflow_cpu import tensorflow_available\n"
                        "print(tensorflow_available())"], env)
    assert probe.stdout.split() == ["False"]

    workdir = tmp_path / "run"
    train = ["train.py", "--config=configs/smoke.py", f"--workdir={workdir}", *TINY]
    first = _run([*train, "--config.num_epochs=1"], env)
    assert "host feed: numpy" in first.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 2
    assert (workdir / "checkpoints" / "2").is_dir()
    assert list(workdir.glob("events.out.tfevents.*"))  # written without TensorFlow

    resumed = _run([*train, "--config.num_epochs=2"], env)
    assert "resuming from step 2" in resumed.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 4

    data = tmp_path / "data"
    write_processed(str(data), "test", n=3)
    _run(["eval.py", "--checkpoint", str(workdir), "--data_dir", str(data), "--layout",
          "processed", "--split", "test", "--out", str(tmp_path / "eval.json")], env)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["n_images"] == 3 and "fixed" in report["protocols"]
    _run(["predict.py", "--checkpoint", str(workdir), "--input", str(data / "test" / "images"),
          "--output", str(tmp_path / "masks")], env)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["1.png", "2.png", "3.png"]
