"""hanet_jax.host_memory: after the first call, XLA:CPU's large buffers stop page-faulting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hanet_jax import host_memory

ROOT = Path(__file__).resolve().parents[1]

# A 64 MiB result per call: above glibc's largest mmap threshold (32 MiB), so with glibc's
# defaults every call maps and faults it in afresh.
_PROBE = r"""
import resource, sys
from hanet_jax import host_memory
applied = host_memory.keep_freed_host_memory_if_cpu_only()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((16 * 1024 * 1024,), jnp.float32)
f(x).block_until_ready()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = f(x).block_until_ready()
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, min(faults))
"""


def _probe(mode: str) -> tuple[bool, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), host_memory.ENV: mode, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    applied, faults = proc.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(host_memory._libc() is None, reason="needs glibc")
def test_kept_memory_is_not_faulted_in_again():
    applied, kept = _probe("keep")
    not_applied, system = _probe("system")
    assert applied and not not_applied
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    print(f"minor faults per call of a 64 MiB result: glibc defaults {system}, kept {kept}")
    assert system >= pages // 2  # the baseline really faults the buffer in ...
    assert kept < pages // 20    # ... and the setting really removes that


def test_cpu_only_follows_jax_platforms(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.cpu_only()
