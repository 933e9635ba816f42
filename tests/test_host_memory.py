"""hanet_jax.ops.cpu.host_memory: after the first call, XLA:CPU's large buffers stop page-faulting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hanet_jax.ops.cpu import host_memory

ROOT = Path(__file__).resolve().parents[1]

# A 64 MiB temporary inside the executable (the (4096, 4096) product), as the train step's
# multi-GB one: above glibc's largest mmap threshold (32 MiB), so with glibc's defaults every
# call maps and faults it in afresh. XLA frees an executable's temporary just after its result
# is ready, so the probe pauses between calls; otherwise the next call can start while the last
# one's buffer is still held.
_PROBE = r"""
import resource, time
from hanet_jax.ops.cpu import host_memory
applied = host_memory.keep_freed_host_memory_if_cpu_only()
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: (a @ b) @ b.T)
a, b = jnp.ones((4096, 64), jnp.float32), jnp.ones((64, 4096), jnp.float32)
assert f.lower(a, b).compile().memory_analysis().temp_size_in_bytes >= 64 * 2**20
f(a, b).block_until_ready()
faults = []
for _ in range(8):
    time.sleep(0.05)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults.sort()
print(applied, faults[0], faults[len(faults) // 2])
"""


def _probe(mode: str) -> tuple[bool, int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), host_memory.ENV: mode, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    applied, fewest, median = proc.stdout.split()
    return applied == "True", int(fewest), int(median)


@pytest.mark.skipif(host_memory._libc() is None, reason="needs glibc")
def test_kept_memory_is_not_faulted_in_again():
    applied, _, kept_median = _probe("keep")
    not_applied, system_fewest, _ = _probe("system")
    assert applied and not not_applied
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    print(f"minor faults per call with a 64 MiB temporary: glibc defaults >= {system_fewest}, "
          f"kept: median {kept_median}")
    assert system_fewest >= pages // 2  # the baseline really faults the buffer in, every call ...
    # ... and the setting removes that (the median: on a busy machine an occasional call can
    # still start before the last one's buffer is back)
    assert kept_median < pages // 20


def test_cpu_only_follows_jax_platforms(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.cpu_only()
