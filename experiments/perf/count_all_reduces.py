"""How many cross-device all-reduces the split train step holds, and how big they are.

    PYTHONPATH=. .venv/bin/python experiments/perf/count_all_reduces.py [--batch_size 8]

Each all-reduce is a rendezvous of the devices; on the CPU split (`hanet_jax/ops/cpu/devices.py`)
the trace shows ~1,000 per step. Counted from the compiled HLO of the bench's train step.
"""
import argparse
import collections
import math
import re

from _bench_process import set_up_like_bench

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
args = parser.parse_args()
set_up_like_bench(args.batch_size)

from hanet_jax.bench import keras_comparison  # noqa: E402

side = keras_comparison._JaxSide("full", keras_comparison.synthetic_batch(args.batch_size, (256, 256)))
lines = [ln for ln in side.train.as_text().splitlines()
         if re.search(r"= .*all-reduce(-start)?\(", ln) and "all-reduce-done" not in ln]
sizes = collections.Counter()
sources = collections.Counter()
total = 0
for ln in lines:
    shapes = re.findall(r"f32\[([\d,]*)\]", ln.split("=", 1)[1].split("all-reduce")[0])
    n = sum(math.prod(int(d) for d in s.split(",") if d) for s in shapes)
    total += n
    sizes["< 1k elements" if n < 1_000 else "< 100k" if n < 100_000 else ">= 100k"] += 1
    if len(shapes) > 1:
        sources["tuples (XLA combined several)"] += 1
    else:
        op = re.search(r'op_name="([^"]*)"', ln)
        from_bn = op and re.search(r"(bn|norm)[^/]*/", op.group(1))
        sources["single, from a BatchNorm" if from_bn else "single, other"] += 1
print(f"{len(lines)} all-reduces in the train step on {side.devices} devices, "
      f"{total:,} float32 elements in all")
print("by size:", dict(sizes))
print("by kind:", dict(sources))
