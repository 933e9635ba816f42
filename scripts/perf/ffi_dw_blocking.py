"""The CPU 3x3 weight gradient's FFI handler (`hanet_jax/models/blas_conv3x3.cc`) by block size,
at every 3x3 conv shape of the bench's train step, per device (batch 4 on one core: each
device's share under the CPU split), timed interleaved, medians. Block 0 is the handler as
round 7 kept it: each of the nine GEMMs streams the whole input and output gradient.

    PYTHONPATH=. taskset -c 0 .venv/bin/python scripts/perf/ffi_dw_blocking.py [--blocks 0,262144,524288]

`count` is how many convs of that shape the model has (the dense layers' 128->32 convs
repeat); the totals weight each shape by it. Prints the largest difference from XLA's own
weight gradient next to its scale.
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

# (H, W, C_in, C_out, count) of the full model at 256x256 (the bench trace's custom calls).
SHAPES = [(256, 256, 32, 16, 1), (128, 128, 128, 32, 1), (128, 128, 64, 64, 1), (64, 64, 128, 128, 1),
          (64, 64, 192, 64, 1), (32, 32, 256, 256, 1), (32, 32, 384, 128, 1), (16, 16, 512, 256, 1),
          (64, 64, 128, 32, 6), (32, 32, 128, 32, 12), (16, 16, 128, 32, 24), (8, 8, 128, 32, 16)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", default="0,131072,262144,524288,1048576,2097152")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    assert blas_conv.available(), "the FFI handler could not be built"
    rng = np.random.default_rng(0)
    xla_dw = jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), jnp.zeros((3, 3, x.shape[-1], dy.shape[-1])))[1](dy)[0])
    tot = dict.fromkeys([*blocks, "xla"], 0.0)
    for h, w, c, f, count in SHAPES:
        x = jnp.asarray(rng.standard_normal((args.batch_size, h, w, c), np.float32))
        dy = jnp.asarray(rng.standard_normal((args.batch_size, h, w, f), np.float32))
        ref = xla_dw(x, dy)
        fns, diffs = {}, []
        for b in blocks:
            blas_conv.BLOCK_BYTES = b  # read while tracing
            fn = jax.jit(blas_conv._weight_grad_local).lower(x, dy).compile()
            diffs.append(float(jnp.max(jnp.abs(fn(x, dy) - ref))))
            fns[b] = lambda fn=fn: jax.block_until_ready(fn(x, dy))
        fns["xla"] = lambda: jax.block_until_ready(xla_dw(x, dy))
        sec = bench_lib.interleaved_medians(fns, args.repeats)
        for b in tot:
            tot[b] += count * sec[b]
        print(f"{args.batch_size}x{h}x{w} {c}->{f} (x{count}): "
              + ", ".join(f"{_name(b)} {1e3 * sec[b]:.2f} ms ({sec[blocks[0]] / sec[b]:.2f}x)" for b in tot)
              + f"; max |diff| {max(diffs):.1e} (scale {float(jnp.max(jnp.abs(ref))):.1f})", flush=True)
    print("weighted sum over the model's convs: "
          + ", ".join(f"{_name(b)} {1e3 * tot[b]:.0f} ms ({tot[blocks[0]] / tot[b]:.2f}x)" for b in tot))


def _name(block):
    return block if block == "xla" else f"{block // 1024}K"


if __name__ == "__main__":
    main()
