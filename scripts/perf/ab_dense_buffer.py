"""A/B of the bench's train step and inference with DenseNet's dense blocks as written
(each layer concatenates its 32 new channels onto everything before: a copy of the whole
feature map per layer) and with one preallocated buffer per block that each layer writes its
channels into (`lax.dynamic_update_slice`) and reads a prefix of. Same parameters, same
arithmetic. Split over the CPU as bench.py runs them, compiled in one process, timed
interleaved.

    PYTHONPATH=. .venv/bin/python scripts/perf/ab_dense_buffer.py [--batch_size 8] [--repeats 3]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench_process import set_up_like_bench, time_sides  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--variant", default="full")
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import numpy as np  # noqa: E402

from hanet_jax import bench_lib  # noqa: E402
from hanet_jax.models.densenet import DenseNet121  # noqa: E402

# Since round 16 the model runs inference with the buffer (`DenseNet121._block_in_place`) and
# trains with the concatenations (`_block`); each side here takes one of them for both.
batch = bench_lib.synthetic_batch(args.batch_size, (256, 256))
sides = {}
block, in_place = DenseNet121._block, DenseNet121._block_in_place
for name, fn in (("concat", block), ("buffer", in_place)):
    DenseNet121._block = DenseNet121._block_in_place = fn  # looked up while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[name] = bench_lib._JaxSide(args.variant, batch)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
DenseNet121._block, DenseNet121._block_in_place = block, in_place
probs = {k: np.asarray(s.infer(s.variables, s.x)) for k, s in sides.items()}
print(f"inference outputs, max |diff|: {np.abs(probs['concat'] - probs['buffer']).max():.2e}")
time_sides(sides, "concat", args.batch_size, args.repeats)
