"""The 3x3 conv weight gradient as one im2col matmul vs XLA's own, at the shapes whose weight
gradients lead the split train step's trace (`trace_train_step.py`).

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/conv3x3_im2col_dw.py [--batch_size 4]

XLA:CPU computes dW of a 3x3 SAME conv as a conv with batch and channels swapped, behind two
layout transposes, at 25-55 GFLOP/s where the forward conv of the same FLOPs runs at ~100-150. Here
dW[kh, kw, c, f] = sum over (b, h, w) of patches[b, h, w, (kh, kw, c)] * dy[b, h, w, f]: nine
shifted slices of the padded input concatenated on channels, then one (9C x BHW) @ (BHW x F)
matmul; and XLA's own with channels-first (NCHW/OIHW) operands. Batch 4 on one core is each
device's share of the bench under the CPU split.
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402

from _conv3x3 import SHAPES, conv  # noqa: E402


def dw_xla(x, w, dy):
    return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]


def dw_nchw(x_nchw, w_oihw, dy_nchw):
    """XLA's dW with channels-first operands (transposed before the call: the best case)."""
    f = lambda w: jax.lax.conv_general_dilated(x_nchw, w, (1, 1), "SAME",  # noqa: E731
                                               dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return jax.vjp(f, w_oihw)[1](dy_nchw)[0]


def dw_im2col(x, w, dy):
    h, wd = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=-1)
    out = jnp.einsum("bhwk,bhwf->kf", patches, dy, preferred_element_type=jnp.float32)
    return out.reshape(w.shape)


parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=4)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

rng = np.random.default_rng(0)
fwd, xla, im2col, nchw = (jax.jit(f) for f in (conv, dw_xla, dw_im2col, dw_nchw))
tot = {"xla": 0.0, "im2col": 0.0, "fwd": 0.0, "nchw": 0.0}
for h, wd, c, f in SHAPES:
    x = jnp.asarray(rng.standard_normal((args.batch_size, h, wd, c), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, c, f), np.float32) * 0.05)
    dy = jnp.asarray(rng.standard_normal((args.batch_size, h, wd, f), np.float32))
    ref = xla(x, w, dy)
    err, scale = float(jnp.max(jnp.abs(ref - im2col(x, w, dy)))), float(jnp.max(jnp.abs(ref)))
    xc, wc, dyc = (jnp.asarray(np.ascontiguousarray(np.transpose(a, p)))
                   for a, p in ((x, (0, 3, 1, 2)), (w, (3, 2, 0, 1)), (dy, (0, 3, 1, 2))))
    sec = keras_comparison.interleaved_medians({
        "fwd": lambda: fwd(x, w).block_until_ready(),
        "xla": lambda: xla(x, w, dy).block_until_ready(),
        "im2col": lambda: im2col(x, w, dy).block_until_ready(),
        "nchw": lambda: nchw(xc, wc, dyc).block_until_ready()}, args.repeats)
    gflop = 2 * args.batch_size * h * wd * 9 * c * f / 1e9
    for k in tot:
        tot[k] += sec[k]
    print(f"{args.batch_size}x{h}x{wd} {c}->{f}: fwd {1e3 * sec['fwd']:6.1f} ms, "
          f"dW xla {1e3 * sec['xla']:6.1f} ms ({gflop / sec['xla']:5.1f} GFLOP/s), im2col "
          f"{1e3 * sec['im2col']:6.1f} ms ({gflop / sec['im2col']:5.1f} GFLOP/s): "
          f"{sec['xla'] / sec['im2col']:.2f}x; NCHW {1e3 * sec['nchw']:6.1f} ms; "
          f"max |diff| {err:.1e} of {scale:.1e}", flush=True)
print(f"sum over the shapes: fwd {1e3 * tot['fwd']:.0f} ms, dW xla {1e3 * tot['xla']:.0f} ms, "
      f"im2col {1e3 * tot['im2col']:.0f} ms ({tot['xla'] / tot['im2col']:.2f}x), "
      f"NCHW {1e3 * tot['nchw']:.0f} ms ({tot['xla'] / tot['nchw']:.2f}x)")
