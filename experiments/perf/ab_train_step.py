"""A/B of the real bench train step and inference (`hanet_jax.bench.keras_comparison._JaxSide`) with the CPU
fast paths switched off and on, compiled in one process and timed interleaved.

    PYTHONPATH=. .venv/bin/python scripts/perf/ab_train_step.py [--batch_size 8] [--repeats 5]

Configurations: `before` (flax BatchNorm, `nn.max_pool`: the model as it is), `maxpool` (only the
hand-written max-pool gradient), `bn` (only the hand-written BatchNorm gradient), `after` (both);
the hand-written versions live in scripts/perf/cpu_bn_maxpool_experiment.py.
"""
import argparse
import time

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import cpu_bn_maxpool_experiment as exp  # noqa: E402

from hanet_jax.bench import keras_comparison as bench_lib  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--configs", default="before,after")
parser.add_argument("--variant", default="full")
args = parser.parse_args()

CONFIGS = {"before": (False, False), "maxpool": (False, True), "bn": (True, False), "after": (True, True)}
batch = bench_lib.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name in args.configs.split(","):
    exp.uninstall()
    exp.install(*CONFIGS[name])
    t0 = time.perf_counter()
    sides[name] = bench_lib._JaxSide(args.variant, batch)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s; train GFLOP/img "
          f"{sides[name].train_flops / args.batch_size / 1e9:.1f}", flush=True)
exp.uninstall()
fns = {}
for name, side in sides.items():
    fns[f"{name} train"] = side.train_once
for name, side in sides.items():
    fns[f"{name} infer"] = side.infer_once
sec = bench_lib.interleaved_medians(fns, args.repeats)
base = args.configs.split(",")[0]
for k, v in sec.items():
    kind = k.split()[-1]
    print(f"{k:16s} {1e3 * v:8.0f} ms/batch  {args.batch_size / v:6.2f} img/s  "
          f"speed-up vs {base}: {sec[f'{base} {kind}'] / v:.2f}x")
