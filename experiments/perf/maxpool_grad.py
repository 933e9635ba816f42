"""Rounds 14-15: the stem's max-pool gradient and forward (4x130x130x64 padded input, each
device's share of the bench's batch of 8), XLA's against our handlers
(`hanet_jax/ops/cpu/maxpool.py`), one core, interleaved medians.

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/maxpool_grad.py [--repeats 5]
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.ops.cpu import maxpool  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=4)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
assert maxpool.available()
rng = np.random.default_rng(0)
x = jnp.pad(jnp.maximum(jnp.asarray(rng.standard_normal((args.batch_size, 128, 128, 64), np.float32)), 0),
            ((0, 0), (1, 1), (1, 1), (0, 0)))
dy = jnp.asarray(rng.standard_normal((args.batch_size, 64, 64, 64), np.float32))
fns = {name: jax.jit(lambda x, dy, f=f: jax.vjp(f, x)[1](dy)[0])
       for name, f in (("xla", maxpool._pool), ("ours", maxpool._pool_with_our_grad))}
same = bool(jnp.array_equal(fns["xla"](x, dy), fns["ours"](x, dy)))
sec = keras_comparison.interleaved_medians(
    {k: (lambda f=f: jax.block_until_ready(f(x, dy))) for k, f in fns.items()}, args.repeats)
print(f"max-pool gradient, {args.batch_size}x130x130x64: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in sec.items())
      + f"; identical: {same}")

pools = {name: jax.jit(f) for name, f in (("xla", maxpool._pool), ("ours", maxpool._pool_with_our_grad))}
same = bool(jnp.array_equal(pools["xla"](x), pools["ours"](x)))
sec = keras_comparison.interleaved_medians(
    {k: (lambda f=f: jax.block_until_ready(f(x))) for k, f in pools.items()}, args.repeats)
print(f"max-pool forward, {args.batch_size}x130x130x64: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in sec.items())
      + f"; identical: {same}")
