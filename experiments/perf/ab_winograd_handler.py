"""A/B of the bench's train step and inference with the 3x3 convs' forward and input gradient
in XLA's direct conv (xla) or in our Winograd handler (auto: m per shape as `winograd.tile_size`
picks it; m2 / m4: F(2x2, 3x3) / F(4x4, 3x3) wherever they fit). Each side with the transition
layers' 2x2 average pool after their 1x1 conv, as Keras orders them; `pool` is auto with the
model's own order, pool first; `band256k`, `band512k`, `band2m`, `band4m` are auto with that
`settings.band_bytes` (default 1 MB). Round 15 of
docs/performance.md. Split over the CPU as bench.py runs it, compiled in one process and timed
interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_winograd_handler.py [--order xla,auto]
        [--baseline SIDE (default: the first)] [--repeats 5]
"""
import argparse
import time

from _bench_process import set_up_like_bench, time_sides

parser = argparse.ArgumentParser()
parser.add_argument("--order", default="xla,auto", help="the sides, in the order compiled (and timed); of xla, auto, m2, m4, pool, band256k, band512k, band2m, band4m")
parser.add_argument("--baseline", default=None, help="the side speed-ups are relative to")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import flax.linen as nn  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.models import densenet  # noqa: E402
from hanet_jax.models.layers import Conv  # noqa: E402
from hanet_jax.ops.cpu import settings  # noqa: E402

pool_first = densenet.DenseNet121._transition


def conv_first(self, x, stage, skips, train):
    """The transition in Keras's order: 1x1 conv, then the pool."""
    if stage == 1 + len(self.blocks):
        return x
    x = self._bn_relu(x, f"pool{stage}_bn", train)
    x = Conv(x.shape[-1] // 2, 1, use_bias=False, dtype=self.dtype, name=f"pool{stage}_conv")(x)
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    skips[f"pool{stage}_pool"] = x
    return x


batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
names = args.order.split(",")
sides = {}
for name in names:
    band = {"band256k": 1 << 18, "band512k": 1 << 19, "band2m": 1 << 21, "band4m": 1 << 22}.get(name)
    densenet.DenseNet121._transition = pool_first if name == "pool" or band else conv_first
    t0 = time.perf_counter()
    # read while tracing (and partitioning), inside _JaxSide
    with settings.using(winograd_m={"xla": 0, "m2": 2, "m4": 4}.get(name), band_bytes=band or (1 << 20)):
        sides[name] = keras_comparison._JaxSide("full", batch)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
time_sides(sides, args.baseline or names[0], args.batch_size, args.repeats)
