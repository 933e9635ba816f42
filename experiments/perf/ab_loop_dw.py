"""A/B of the bench's train step with the 3x3 weight gradients in the handler's OpenBLAS GEMMs
(gemms), in its own loop at 32 outputs only (narrow, round 11) or at every width it tiles (loop,
round 12): `settings.weight_grad_loop`; and with the 1x1 convs' in the loop too (1x1, round 13:
`settings.conv1x1_weight_grad`; the other sides leave them to XLA). Split over the CPU as bench.py
runs it, compiled in one process and timed interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_loop_dw.py [--order gemms,narrow]
        [--baseline SIDE (default: the first)] [--repeats 5]
"""
import argparse
import time

from _bench_process import set_up_like_bench, time_sides

parser = argparse.ArgumentParser()
parser.add_argument("--order", default="gemms,narrow", help="the sides, in the order compiled (and timed); of gemms, narrow, loop, 1x1")
parser.add_argument("--baseline", default=None, help="the side speed-ups are relative to")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
set_up_like_bench(args.batch_size)

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.ops.cpu import settings  # noqa: E402

batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
names = args.order.split(",")
sides = {}
for name in names:
    t0 = time.perf_counter()
    # read while tracing (and partitioning), inside _JaxSide
    with settings.using(weight_grad_loop={"gemms": 0, "narrow": 1, "loop": 2, "1x1": 2}[name],
                        conv1x1_weight_grad=name == "1x1"):
        sides[name] = keras_comparison._JaxSide("full", batch)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
time_sides(sides, args.baseline or names[0], args.batch_size, args.repeats)
