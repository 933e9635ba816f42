"""Round 15: every 3x3 SAME conv shape of the bench's forward pass (batch 4, each device's share
of the batch of 8; `--grad` times the input gradient's convs instead: the same maps, channels
swapped), as XLA's direct conv and as our Winograd handler at m = 2 and m = 4 and as
`winograd.tile_size` picks (auto). One core; medians of interleaved calls; the weighted sum
counts each shape as often as the model has it. The relative difference from XLA's output is
printed per shape.

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/winograd_shapes.py [--repeats 7] [--grad]
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.ops.cpu import conv as cpu_conv  # noqa: E402
from hanet_jax.ops.cpu import settings, winograd  # noqa: E402

# (map, C in, C out, how many in the model): from the model's jaxpr at 256x256.
SHAPES = [(64, 128, 32, 6), (32, 128, 32, 12), (16, 128, 32, 24), (8, 128, 32, 16), (8, 1024, 256, 1),
          (16, 256, 256, 1), (16, 512, 256, 1), (32, 256, 256, 1), (32, 384, 128, 1), (64, 128, 128, 1),
          (64, 192, 64, 1), (128, 64, 64, 1), (128, 128, 32, 1), (256, 32, 16, 1)]

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=4)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--grad", action="store_true", help="the input gradients' convs (channels swapped)")
args = parser.parse_args()
assert cpu_conv.active() and winograd._library() is not None
rng = np.random.default_rng(0)
sums = {}
for hw, c, f, n in SHAPES:
    if args.grad:
        c, f = f, c
    x = jnp.asarray(rng.standard_normal((args.batch_size, hw, hw, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, c, f)) / np.sqrt(9 * c), jnp.float32)
    fns, picked = {}, winograd.tile_size(hw, hw, c, f)
    for name, m in (("xla", 0), ("m2", 2), ("m4", 4), ("auto", None)):
        with settings.using(winograd_m=m):  # read while tracing
            fns[name] = jax.jit(lambda x, k: cpu_conv._conv3x3(x, k)).lower(x, k).compile()
    ref = np.asarray(fns["xla"](x, k))
    err = {name: float(np.abs(np.asarray(fn(x, k)) - ref).max() / np.abs(ref).max()) for name, fn in fns.items()}
    sec = keras_comparison.interleaved_medians(
        {k_: (lambda f=fn: jax.block_until_ready(f(x, k))) for k_, fn in fns.items()}, args.repeats)
    for name, s in sec.items():
        sums[name] = sums.get(name, 0.0) + 1e3 * s * n
    gflop = 2 * args.batch_size * hw * hw * 9 * c * f / 1e9
    print(f"{hw:3d}x{hw:<3d} {c:4d}->{f:<4d} x{n:<2d} auto=m{picked} " + "  ".join(
        f"{name} {1e3 * s:7.2f} ms ({gflop / s:4.0f} GF/s eq, diff {err[name]:.0e})" for name, s in sec.items()),
        flush=True)
print("weighted sums (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in sums.items()))
