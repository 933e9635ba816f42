"""A/B of the bench's train step and inference with the 3x3 convs as XLA's conv and as Winograd
F(2x2, 3x3) (`scripts/perf/_winograd.py`, swapped in for `jax.lax.conv_general_dilated` while
the second side is traced), split over the CPU as bench.py runs them, compiled in one process
and timed interleaved.

    PYTHONPATH=. .venv/bin/python scripts/perf/ab_winograd.py [--batch_size 8] [--repeats 5]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench_process import set_up_like_bench  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--variant", default="full")
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import numpy as np  # noqa: E402

import jax  # noqa: E402

import _winograd  # noqa: E402
from hanet_jax import bench_lib  # noqa: E402

direct_conv = jax.lax.conv_general_dilated


def conv_or_winograd(x, kernel, window_strides, padding, **kwargs):
    """Winograd where it applies (3x3, stride 1, SAME, NHWC/HWIO, even H and W), else XLA's."""
    if (window_strides == (1, 1) and kwargs.get("dimension_numbers") == ("NHWC", "HWIO", "NHWC")
            and x.dtype == jax.numpy.float32
            and _winograd.supported(x.shape, kernel.shape, 1, padding)):
        return _winograd.conv3x3(x, kernel)
    return direct_conv(x, kernel, window_strides, padding, **kwargs)


batch = bench_lib.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name, conv in (("xla", direct_conv), ("winograd", conv_or_winograd)):
    jax.lax.conv_general_dilated = conv  # looked up while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[name] = bench_lib._JaxSide(args.variant, batch)
jax.lax.conv_general_dilated = direct_conv
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s; train GFLOP/img "
          f"{sides[name].train_flops / args.batch_size / 1e9:.1f}", flush=True)
probs = {k: np.asarray(s.infer(s.variables, s.x)) for k, s in sides.items()}
print(f"inference outputs, max |diff|: {np.abs(probs['xla'] - probs['winograd']).max():.2e} "
      f"(scale {np.abs(probs['xla']).max():.2e})")
fns = {f"{k} {kind}": getattr(s, f"{kind}_once") for kind in ("train", "infer") for k, s in sides.items()}
sec = bench_lib.interleaved_medians(fns, args.repeats)
for k, v in sec.items():
    kind = k.split()[-1]
    print(f"{k:16s} {1e3 * v:8.0f} ms/batch  {args.batch_size / v:6.2f} img/s  "
          f"speed-up vs xla: {sec[f'xla {kind}'] / v:.2f}x")
