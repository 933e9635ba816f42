"""Benchmark our HA-Net against the Keras original in one run: parameters, FLOPs, memory, speed.
Each side runs in its own worker process, timed in turns (`--same_process`: both in this one).

    python bench.py --variant full --batch_size 8 --json /tmp/bench_full.json
    python bench.py --variant baseline --image_size 64 --batch_size 2 --repeats 1 --no_keras

The logic and the meaning of every field are in `hanet_jax/bench_lib.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="full", choices=("full", "no_tam", "no_tam_no_sfeb", "baseline"))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, nargs="+", default=[256], help="H [W], multiples of 32")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median taken)")
    parser.add_argument("--no_keras", action="store_true", help="skip the Keras original (e.g. on GPU/TPU)")
    parser.add_argument("--matmul_n", type=int, default=2048, help="size of the peak-matmul probe")
    parser.add_argument("--same_process", action="store_true",
                        help="build and time both sides in this process (as before 2026-12-01) instead of "
                             "one worker process each; their thread pools then compete")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)

    from hanet_jax.ops.cpu import devices as cpu_devices
    from hanet_jax.ops.cpu import host_memory

    # What each side's worker process does first (bench_lib._side_worker); here it matters only
    # with --same_process, where it is process-wide and the Keras side gets it too.
    host_memory.keep_freed_host_memory_if_cpu_only()
    try:  # our side's data parallelism on a CPU-only host (hanet_jax/cpu_devices.py)
        cpu_devices.split_cpu_if_cpu_only(args.batch_size)
    except ValueError as e:
        parser.error(str(e))
    from hanet_jax.bench import keras_comparison as bench_lib

    size = args.image_size if len(args.image_size) == 2 else args.image_size * 2
    result = bench_lib.run(args.variant, args.batch_size, size, repeats=args.repeats, keras=not args.no_keras,
                           matmul_n=args.matmul_n, command=shlex.join(["python", "bench.py", *argv]),
                           isolate=not args.same_process)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(bench_lib.markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
