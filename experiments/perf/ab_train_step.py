"""A/B of the real bench train step and inference (`hanet_jax.bench.keras_comparison._JaxSide`) with the CPU
fast paths switched off and on, compiled in one process and timed interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_train_step.py [--batch_size 8] [--repeats 5]

Configurations: `before` (flax BatchNorm and the stem pool of `hanet_jax.ops`: the model as it is;
`nn.max_pool` until round 14 put the pool in a C++ handler on the CPU), `maxpool` (only the
hand-written max-pool gradient), `bn` (only the hand-written BatchNorm gradient), `after` (both);
the hand-written versions live in experiments/perf/cpu_bn_maxpool_experiment.py.
"""
import argparse
import time

import cpu_bn_maxpool_experiment as exp

from hanet_jax.bench import keras_comparison

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--configs", default="before,after")
parser.add_argument("--variant", default="full")
args = parser.parse_args()

CONFIGS = {"before": (False, False), "maxpool": (False, True), "bn": (True, False), "after": (True, True)}
batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name in args.configs.split(","):
    exp.uninstall()
    exp.install(*CONFIGS[name])
    t0 = time.perf_counter()
    sides[name] = keras_comparison._JaxSide(args.variant, batch)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s; train GFLOP/img "
          f"{sides[name].train_flops / args.batch_size / 1e9:.1f}", flush=True)
exp.uninstall()
fns = {}
for name, side in sides.items():
    fns[f"{name} train"] = side.train_once
for name, side in sides.items():
    fns[f"{name} infer"] = side.infer_once
sec = keras_comparison.interleaved_medians(fns, args.repeats)
base = args.configs.split(",")[0]
for k, v in sec.items():
    kind = k.split()[-1]
    print(f"{k:16s} {1e3 * v:8.0f} ms/batch  {args.batch_size / v:6.2f} img/s  "
          f"speed-up vs {base}: {sec[f'{base} {kind}'] / v:.2f}x")
