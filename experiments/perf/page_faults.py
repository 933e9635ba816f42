"""Page faults and kernel time per train step, with glibc's malloc defaults or with
hanet_jax.ops.cpu.host_memory applied before JAX starts (as the entry points do) or after (too late).

    PYTHONPATH=. python experiments/perf/page_faults.py --image_size 256 --batch_size 8 --mode system
    PYTHONPATH=. python experiments/perf/page_faults.py --image_size 256 --batch_size 8 --mode keep

Run the two modes as separate processes: the setting is process-wide and cannot be undone.
"""

import argparse
import resource
import time

import jax

from hanet_jax.bench import keras_comparison
from hanet_jax.ops.cpu import host_memory


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--mode", choices=("system", "keep", "keep_late"), required=True)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    if args.mode == "keep":
        print("host_memory applied:", host_memory.keep_freed_host_memory_if_cpu_only())
    if args.mode == "keep_late":  # after the backend's threads exist: too late for them
        jax.jit(lambda x: x + 1)(1.0).block_until_ready()
        print("host_memory applied:", host_memory.keep_freed_host_memory())
    side = keras_comparison._JaxSide("full", keras_comparison.synthetic_batch(args.batch_size, (args.image_size,) * 2))
    print("XLA buffer bytes:", side.memory)
    side.train_once()
    for _ in range(args.steps):
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        side.train_once()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        faults = r1.ru_minflt - r0.ru_minflt
        print(f"{args.mode}: step {time.perf_counter() - t:.2f} s wall, {faults} minor faults "
              f"(~{faults * 4 / 1024:.0f} MiB), user {r1.ru_utime - r0.ru_utime:.2f} s, "
              f"sys {r1.ru_stime - r0.ru_stime:.2f} s", flush=True)


if __name__ == "__main__":
    main()
