"""Faults across devices: a run saved on four devices resumes on two and on one. (Apart from
tests/test_train_distributed.py, which also holds the SIGTERM to one of two processes, so that
pytest-xdist's two workers, which take whole files, share the long multi-process tests.)"""

import json
import subprocess

import numpy as np
import pytest

import _train_helpers as helpers


@pytest.mark.slow
def test_a_run_saved_on_four_devices_resumes_on_two_and_on_one(tmp_path):
    """A preempted job that comes back on another slice: SIGTERM before step 2 of a 4-device
    run (epoch 0 validated, so the plateau and early-stopping state have moved) saves step 3.
    Restored as train.py restores it, on 2 devices and on 1, the step, weights, optimiser,
    plateau and RNG state are the saved ones, bit for bit, placed on the new devices; a resume
    on 2 devices says in one line that the device count changed and trains to the end."""
    import shutil
    import signal

    config = {"optimizer.schedule": "plateau"}
    overrides = json.dumps(config)
    prefix, saved = tmp_path / "handshake", tmp_path / "w4"
    proc = subprocess.Popen(
        helpers.worker_command(saved, tmp_path / "stopped.npz", overrides=overrides,
                               sigterm_handshake=prefix, sigterm_step=2),
        env=helpers.subprocess_env(devices=4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    (err,) = helpers.signal_at_handshake([proc], prefix, signal.SIGTERM)
    assert proc.returncode == 143 and "checkpoint at step 3" in err, err[-3000:]

    states = {}
    for devices in (4, 2, 1):
        out = tmp_path / f"restored{devices}.npz"
        done = subprocess.run(helpers.worker_command(saved, out, overrides=overrides,
                                                     restore_only=True),
                              env=helpers.subprocess_env(devices=devices), timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        states[devices] = helpers.load_result(out)
        info = states[devices][1]
        assert info == {"devices": devices, "param_devices": [devices], "saved_devices": 4}
    leaves = states[4][0]
    assert int(leaves["step"]) == 3 and np.isfinite(leaves["plateau/best_value"])  # epoch 0 seen
    assert any(k.startswith("opt_state/") for k in leaves) and "rng" in leaves
    for devices in (2, 1):
        got = states[devices][0]
        assert got.keys() == leaves.keys()
        assert all(np.array_equal(got[k], leaves[k]) for k in leaves), devices

    workdir = tmp_path / "w2"
    shutil.copytree(saved, workdir)
    proc = subprocess.run(helpers.worker_command(workdir, tmp_path / "resumed.npz",
                                                 overrides=overrides),
                          env=helpers.subprocess_env(devices=2), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = [line for line in proc.stderr.splitlines() if "device count changed" in line]
    assert len(changed) == 1 and "saved on 4 devices (1 processes), resuming on 2 devices" in changed[0]
    print("\n" + changed[0].split("] ", 1)[-1])
    # Trained to the end: every epoch of the config (the tiny run never stops early), not an
    # in-process reference run trained only to count its steps.
    summary = helpers.load_result(tmp_path / "resumed.npz")[1]
    epochs = helpers.tiny_config().num_epochs
    assert not summary["preempted"] and not summary["stopped_early"]
    assert summary["epochs"] == epochs and summary["steps"] == epochs * summary["steps_per_epoch"]
