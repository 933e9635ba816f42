"""A/B of the bench's train step and inference under HANET_BLAS_CONV modes (round 10): `1` (the
custom call's weight gradient at every 3x3 stride-1 conv), `auto` (per shape, whichever timed
faster on this host; `hanet_jax/models/blas_conv.py`), `0` (XLA's everywhere). Split over the
CPU as bench.py runs them, compiled in one process and timed interleaved.

    PYTHONPATH=. .venv/bin/python scripts/perf/ab_blas_conv_mode.py [--modes 1,auto] [--repeats 5]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench_process import set_up_like_bench, time_sides  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--modes", default="1,auto")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
set_up_like_bench(args.batch_size)

from hanet_jax import bench_lib  # noqa: E402
from hanet_jax.models import blas_conv  # noqa: E402

batch = bench_lib.synthetic_batch(args.batch_size, (256, 256))
modes = args.modes.split(",")
sides = {}
for mode in modes:
    os.environ[blas_conv.ENV] = mode  # read while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[mode] = bench_lib._JaxSide("full", batch)
    print(f"compiled {blas_conv.ENV}={mode} in {time.perf_counter() - t0:.0f} s", flush=True)
for (host, key), entry in sorted(blas_conv._TIMINGS.items()):
    print(f"timed {key}: custom call {entry['custom_call_ms']:.1f} ms, XLA {entry['xla_ms']:.1f} ms"
          f" -> {'custom call' if entry['custom_call'] else 'XLA'}")
time_sides(sides, modes[0], args.batch_size, args.repeats)
