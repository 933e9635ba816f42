"""Round 11: the 3x3 weight gradient of the narrow-output convs (32 outputs: dec4's and the 58
dense layers'; the head's 16 too, which stays on the GEMMs) in the handler's own loop
(`blas_conv.NARROW`, `hanet_jax/models/blas_conv3x3.cc`) against its OpenBLAS GEMMs and XLA's
gradient, per shape, batch 4 on one core (each device's share under the CPU split),
interleaved medians. Counts weight each shape by how often the model has it.

    PYTHONPATH=. taskset -c 0 .venv/bin/python scripts/perf/narrow_dw.py [--repeats 5]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from hanet_jax import host_memory  # noqa: E402

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _conv3x3 import conv  # noqa: E402
from hanet_jax import bench_lib  # noqa: E402
from hanet_jax.models import blas_conv  # noqa: E402

SHAPES = [(256, 256, 32, 16, 1), (128, 128, 128, 32, 1), (64, 64, 128, 32, 6), (32, 32, 128, 32, 12),
          (16, 16, 128, 32, 24), (8, 8, 128, 32, 16)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    assert blas_conv.available(), "the model's handler could not be built"
    rng = np.random.default_rng(0)
    xla = jax.jit(lambda x, dy: jax.vjp(lambda k: conv(x, k), jnp.zeros((3, 3, x.shape[-1], dy.shape[-1])))[1](dy)[0])
    fns = {"xla": xla, "gemms": None, "narrow": None}
    tot = dict.fromkeys(fns, 0.0)
    for h, w, c, f, count in SHAPES:
        x = jnp.asarray(rng.standard_normal((args.batch_size, h, w, c), np.float32))
        dy = jnp.asarray(rng.standard_normal((args.batch_size, h, w, f), np.float32))
        for name in ("gemms", "narrow"):  # NARROW is read while tracing: one executable each
            blas_conv.NARROW = name == "narrow"
            fns[name] = jax.jit(lambda x, dy: blas_conv._weight_grad_local(x, dy)).lower(x, dy).compile()
        ref = fns["xla"](x, dy)
        rel = {k: float(jnp.max(jnp.abs(fn(x, dy) - ref)) / jnp.max(jnp.abs(ref))) for k, fn in fns.items()}
        sec = bench_lib.interleaved_medians(
            {k: (lambda fn=fn: jax.block_until_ready(fn(x, dy))) for k, fn in fns.items()}, args.repeats)
        gflop = 2 * 9 * c * f * args.batch_size * h * w / 1e9
        for k in tot:
            tot[k] += count * sec[k]
        print(f"{args.batch_size}x{h}x{w} {c}->{f} (x{count}, {gflop:.2f} GFLOP): "
              + ", ".join(f"{k} {1e3 * sec[k]:.2f} ms ({gflop / sec[k]:.0f} GFLOP/s, rel diff {rel[k]:.1e})"
                          for k in fns), flush=True)
    print("weighted sum: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in tot.items()))


if __name__ == "__main__":
    main()
