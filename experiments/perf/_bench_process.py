"""The process set-up bench.py does before JAX starts, shared by the perf scripts that time or
inspect the bench's own step: freed host memory stays mapped, and a CPU-only host is split into
devices (`hanet_jax/ops/cpu/devices.py`; HANET_CPU_DEVICES=1 for one device)."""

from hanet_jax.ops.cpu import devices
from hanet_jax.ops.cpu import host_memory


def set_up_like_bench(batch_size: int) -> None:
    """Call before anything imports JAX."""
    host_memory.keep_freed_host_memory_if_cpu_only()
    devices.split_cpu_if_cpu_only(batch_size)


def time_sides(sides: dict, baseline: str, batch_size: int, repeats: int) -> dict:
    """Times the train step and inference of each `keras_comparison._JaxSide` in `sides`, interleaved,
    and prints ms per batch, images/s and the speed-up over `sides[baseline]`."""
    from hanet_jax.bench import keras_comparison

    fns = {f"{k} {kind}": getattr(s, f"{kind}_once") for kind in ("train", "infer")
           for k, s in sides.items()}
    sec = keras_comparison.interleaved_medians(fns, repeats)
    for k, v in sec.items():
        kind = k.split()[-1]
        print(f"{k:16s} {1e3 * v:8.0f} ms/batch  {batch_size / v:6.2f} img/s  "
              f"speed-up vs {baseline}: {sec[f'{baseline} {kind}'] / v:.2f}x")
    return sec
