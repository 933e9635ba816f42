"""The process set-up bench.py does before JAX starts, shared by the perf scripts that time or
inspect the bench's own step: freed host memory stays mapped, and a CPU-only host is split into
devices (`hanet_jax/cpu_devices.py`; HANET_CPU_DEVICES=1 for one device)."""

from hanet_jax import cpu_devices, host_memory


def set_up_like_bench(batch_size: int) -> None:
    """Call before anything imports JAX."""
    host_memory.keep_freed_host_memory_if_cpu_only()
    cpu_devices.split_cpu_if_cpu_only(batch_size)
