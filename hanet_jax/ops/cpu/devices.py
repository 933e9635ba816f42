"""Run a CPU-only host as two XLA devices, so that data parallelism fills the idle core time.

One XLA:CPU device runs a step's ops on the host's thread pool, but the step's long chains of
dependent ops keep the 2-core box only ~70% busy (`top`: ~137% for a training process). With the
host split into two devices, each runs half of every batch (the same data-parallel program as on
several GPUs; BatchNorm still normalises over the global batch), and each half fills the
other's idle time. Measured with `scripts/perf/virtual_devices.py` (device 0 alone vs both, timed
interleaved in one process; docs/performance.md): train step 1.22x at 256x256 batch 8 and 1.15x
at 128x128 batch 16, inference 1.46x and 1.41x. Four devices gained nothing over two (separate
processes, noisier).

`train.py` and `bench.py` call `split_cpu_if_cpu_only(batch_size)` before JAX starts its backend,
where JAX can only run on the CPU (`host_memory.cpu_only`) and the run is a single process.
HANET_CPU_DEVICES=N asks for N devices (1 leaves one device); an XLA_FLAGS that already sets
--xla_force_host_platform_device_count wins. The count drops to the largest one that divides
the batch and leaves each device at least MIN_PER_DEVICE images: with two images per device the
split was slower (the main job, batch 4 at 64x64: ~7.5 training images/s split against ~10 on
one device, from per-epoch `images_per_second` in the `summary.json` of
`XLA_FLAGS=--xla_force_host_platform_device_count=2 python train.py --config=configs/default.py
--workdir=/tmp/main_split --config.num_epochs=3` and of the same command without `XLA_FLAGS`,
which now keeps one device).
"""

from __future__ import annotations

import os

from hanet_jax.ops.cpu import host_memory

ENV = "HANET_CPU_DEVICES"
DEFAULT = 2
MIN_PER_DEVICE = 4
_XLA_FLAG = "xla_force_host_platform_device_count"


def requested() -> int:
    """HANET_CPU_DEVICES as a positive int (DEFAULT when unset); ValueError naming it otherwise."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV}={raw!r}: expected a positive number of CPU devices")
    return n


def device_count_for(batch_size: int | None, wanted: int) -> int:
    """The largest count <= `wanted` that divides `batch_size` into shares of at least
    MIN_PER_DEVICE (any count when the batch is not known)."""
    n = max(1, wanted)
    while n > 1 and batch_size and (batch_size % n or batch_size // n < MIN_PER_DEVICE):
        n -= 1
    return n


def split_cpu_if_cpu_only(batch_size: int | None = None) -> int:
    """Before JAX starts: split a CPU-only host into devices; returns how many were asked for
    (1 where nothing changed: an accelerator host, XLA_FLAGS's own count, or a count of 1)."""
    if not host_memory.cpu_only() or _XLA_FLAG in os.environ.get("XLA_FLAGS", ""):
        return 1
    n = device_count_for(batch_size, requested())
    if n > 1:
        import jax

        jax.config.update("jax_num_cpu_devices", n)
    return n
