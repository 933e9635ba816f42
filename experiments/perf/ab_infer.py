"""A/B of the bench's inference alone: the model as it is (`base`) against it with one of round
16's changes undone, each side compiled in one process and timed interleaved, split over the
CPU as bench.py runs it. The logits' difference from the first side is printed.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_infer.py [--order base,nosub] [--repeats 7]

Sides: `base2`, the model as it is again (an A/A control); `nosub`, the head's conv on the
upsampled map (not `ops/cpu/subpixel.py`'s `subpixel_conv3x3`); `unfused`, the dense layers'
second BN + ReLU as its own pass (not read into the 3x3 conv's handler);
`band512k`, `band2m`, `band4m`: the Winograd handler's band of tiles (`settings.band_bytes`);
`stem_pad`: the stem's ReLU and zero padding as their own pass before the pool.
"""
import argparse
import contextlib
import time

from _bench_process import set_up_like_bench

parser = argparse.ArgumentParser()
parser.add_argument("--order", default="base,nosub")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from hanet_jax import ops  # noqa: E402
from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.models.hanet import HANet  # noqa: E402
from hanet_jax.ops.cpu import maxpool, settings, subpixel  # noqa: E402
from hanet_jax.train.sharding import batch_sharded, make_mesh, replicated  # noqa: E402


@contextlib.contextmanager
def patched(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


SIDES = {
    "base": contextlib.nullcontext,
    "base2": contextlib.nullcontext,  # an A/A control: the noise between two sides
    "nosub": lambda: patched(subpixel, "MAX_WEIGHTS", 0),
    "unfused": lambda: patched(ops, "fuses_affine_relu", lambda x, f: False),
    "band512k": lambda: settings.using(band_bytes=1 << 19),
    "band2m": lambda: settings.using(band_bytes=1 << 21),
    "band4m": lambda: settings.using(band_bytes=1 << 22),
    "stem_pad": lambda: patched(maxpool, "relu_pad_max_pool_3x3_s2", maxpool._relu_pad_pool),
}

batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
mesh = make_mesh(jax.devices())
repl, data = replicated(mesh), batch_sharded(mesh)
model = HANet(variant="full")
variables = jax.device_put(keras_comparison.fast_init(model, batch["image"][:1].shape), repl)
x = jax.device_put(jnp.asarray(batch["image"]), data)
fns, ref = {}, None
for name in args.order.split(","):
    t0 = time.perf_counter()
    with SIDES[name]():  # read while tracing
        f = jax.jit(lambda v, x: model.apply(v, x, train=False), in_shardings=(repl, data),
                    out_shardings=data).lower(variables, x).compile()
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    out = f(variables, x)
    ref = out if ref is None else ref
    print(f"  logits max abs diff from the first side {float(jnp.max(jnp.abs(out - ref))):.2e} "
          f"(largest {float(jnp.max(jnp.abs(ref))):.2f})", flush=True)
    fns[name] = lambda f=f: f(variables, x).block_until_ready()
sec = keras_comparison.interleaved_medians(fns, args.repeats)
first = next(iter(sec))
for k, v in sec.items():
    print(f"{k:10s} {1e3 * v:7.1f} ms/batch  {args.batch_size / v:6.2f} img/s  speed-up vs {first}: {sec[first] / v:.3f}x")
