"""hanet_jax.ops.cpu.devices: a CPU-only host split into devices before JAX starts, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hanet_jax.ops.cpu import devices as cpu_devices

ROOT = Path(__file__).resolve().parents[1]


def test_the_count_divides_the_batch():
    assert cpu_devices.device_count_for(16, 2) == 2
    assert cpu_devices.device_count_for(9, 2) == 1  # odd
    assert cpu_devices.device_count_for(4, 2) == 1  # two images per device: slower than one device
    assert cpu_devices.device_count_for(12, 4) == 3
    assert cpu_devices.device_count_for(None, 4) == 4


def test_the_environment_variable_is_read_and_checked(monkeypatch):
    monkeypatch.delenv(cpu_devices.ENV, raising=False)
    assert cpu_devices.requested() == cpu_devices.DEFAULT
    monkeypatch.setenv(cpu_devices.ENV, "3")
    assert cpu_devices.requested() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(cpu_devices.ENV, bad)
        with pytest.raises(ValueError, match=cpu_devices.ENV):
            cpu_devices.requested()


def _devices_after_split(batch_size, **env):
    code = ("from hanet_jax.ops.cpu import devices as cpu_devices; n = cpu_devices.split_cpu_if_cpu_only(%r); "
            "import jax; print(n, jax.device_count())" % batch_size)
    full_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_devices.ENV)}
    full_env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


def test_a_cpu_only_process_gets_two_devices_unless_told_otherwise():
    assert _devices_after_split(8) == ["2", "2"]
    assert _devices_after_split(5) == ["1", "1"]  # an odd batch keeps one device
    assert _devices_after_split(8, HANET_CPU_DEVICES="1") == ["1", "1"]
    assert _devices_after_split(8, XLA_FLAGS="--xla_force_host_platform_device_count=4") == ["1", "4"]


def test_train_names_a_bad_device_count(tmp_path):
    env = {**os.environ, cpu_devices.ENV: "zero", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config=configs/smoke.py",
                           f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "HANET_CPU_DEVICES='zero'" in proc.stderr, proc.stderr[-2000:]
