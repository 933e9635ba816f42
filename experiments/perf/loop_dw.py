"""Rounds 11-13: the conv weight gradient in the handler's own loop (`settings.weight_grad_loop`,
`hanet_jax/ops/cpu/conv_weight_grad.cc`) against its OpenBLAS GEMMs and XLA's gradient, per shape,
batch 4 on one core (each device's share under the CPU split), interleaved medians. Counts weight
each shape by how often the model has it.

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/loop_dw.py [--shapes narrow|decoder|1x1]
        [--sides xla,gemms,narrow,loop] [--repeats 5]

Sides: xla (XLA's gradient), gemms (loop 0), narrow (loop 1: the loop at 32 outputs only, round
11), loop (loop 2: at every width it tiles, round 12). `--shapes narrow` is round 11's set (the 58
dense layers', dec4's and the head's narrow outputs), `decoder` the bottleneck's and decoder's 3x3
convs, `1x1` the dense blocks' 1x1 convs (each block at its mean input width) and the
transitions' (round 13; XLA's is the einsum's gradient there).
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _conv3x3 import conv  # noqa: E402
from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.ops.cpu import conv as cpu_conv  # noqa: E402
from hanet_jax.ops.cpu import settings  # noqa: E402

# (h, w, c_in, c_out, how many the model has); 3x3 convs but in "1x1"
SHAPES = {
    "1x1": [(64, 64, 160, 128, 6), (32, 32, 304, 128, 12), (16, 16, 624, 128, 24), (8, 8, 752, 128, 16),
            (64, 64, 256, 128, 1), (32, 32, 512, 256, 1), (16, 16, 1024, 512, 1)],
    "narrow": [(256, 256, 32, 16, 1), (128, 128, 128, 32, 1), (64, 64, 128, 32, 6), (32, 32, 128, 32, 12),
               (16, 16, 128, 32, 24), (8, 8, 128, 32, 16)],
    "decoder": [(8, 8, 1024, 256, 1), (16, 16, 256, 256, 1), (16, 16, 512, 256, 1), (32, 32, 256, 256, 1),
                (32, 32, 384, 128, 1), (64, 64, 128, 128, 1), (64, 64, 192, 64, 1), (128, 128, 64, 64, 1),
                (128, 128, 128, 32, 1), (256, 256, 32, 16, 1)],
}
LOOP = {"gemms": 0, "narrow": 1, "loop": 2}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="narrow")
    parser.add_argument("--sides", default="xla,gemms,narrow")
    args = parser.parse_args()
    assert cpu_conv.available(), "the model's handler could not be built"
    rng = np.random.default_rng(0)
    taps, conv_, local = (((), cpu_conv._einsum_1x1, cpu_conv._weight_grad_1x1_local) if args.shapes == "1x1"
                          else ((3, 3), conv, cpu_conv._weight_grad_local))
    xla = jax.jit(lambda x, dy: jax.vjp(lambda k: conv_(x, k), jnp.zeros((*taps, x.shape[-1], dy.shape[-1])))[1](dy)[0])
    names = args.sides.split(",")
    tot = dict.fromkeys(names, 0.0)
    for h, w, c, f, count in SHAPES[args.shapes]:
        x = jnp.asarray(rng.standard_normal((args.batch_size, h, w, c), np.float32))
        dy = jnp.asarray(rng.standard_normal((args.batch_size, h, w, f), np.float32))
        fns = {}
        for name in names:  # the loop setting is read while tracing: one executable each
            if name == "xla":
                fns[name] = xla
                continue
            with settings.using(weight_grad_loop=LOOP[name]):
                fns[name] = jax.jit(lambda x, dy: local(x, dy)).lower(x, dy).compile()
        ref = xla(x, dy)
        rel = {k: float(jnp.max(jnp.abs(fn(x, dy) - ref)) / jnp.max(jnp.abs(ref))) for k, fn in fns.items()}
        sec = keras_comparison.interleaved_medians(
            {k: (lambda fn=fn: jax.block_until_ready(fn(x, dy))) for k, fn in fns.items()}, args.repeats)
        gflop = 2 * (9 if taps else 1) * c * f * args.batch_size * h * w / 1e9
        for k in tot:
            tot[k] += count * sec[k]
        print(f"{args.batch_size}x{h}x{w} {c}->{f} (x{count}, {gflop:.2f} GFLOP): "
              + ", ".join(f"{k} {1e3 * sec[k]:.2f} ms ({gflop / sec[k]:.0f} GFLOP/s, rel diff {rel[k]:.1e})"
                          for k in fns), flush=True)
    print("weighted sum: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in tot.items()))


if __name__ == "__main__":
    main()
