"""A/B of the bench's train step and inference with the 3x3 convs as XLA's conv and as a
substitute swapped in for `jax.lax.conv_general_dilated` while the second side is traced:
Winograd F(2x2, 3x3) (`_winograd.py`, round 6) or host BLAS GEMMs through a callback
(`_blas_conv.py`, round 7: the weight gradient only, or the forward too), or the weight
gradient's GEMMs in an FFI custom call on each device (`_blas_ffi.py`). Split over the CPU
as bench.py runs them, compiled in one process and timed interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_conv_swap.py --swap winograd [--batch_size 8] [--repeats 5]
    PYTHONPATH=. .venv/bin/python experiments/perf/ab_conv_swap.py --swap ffi_dw --blas_threads 1
"""
import argparse
import os
import time

from _bench_process import set_up_like_bench, time_sides

parser = argparse.ArgumentParser()
parser.add_argument("--swap", choices=["winograd", "blas_dw", "blas_all", "ffi_dw", "ffi_all"], required=True)
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--variant", default="full")
parser.add_argument("--min_channels", type=int, default=0,
                    help="swap only convs with C_in and C_out at least this (the large decoder convs)")
parser.add_argument("--blas_threads", type=int, default=1,
                    help="OpenBLAS threads for the blas swaps (set before numpy loads)")
args = parser.parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
os.environ["HANET_BLAS_CONV"] = "0"  # the model's own CPU weight gradient off: "xla" is XLA's
set_up_like_bench(args.batch_size)

import numpy as np  # noqa: E402

import jax  # noqa: E402

import _blas_conv  # noqa: E402
import _winograd  # noqa: E402
from hanet_jax.bench import keras_comparison  # noqa: E402

direct_conv = jax.lax.conv_general_dilated


def swapped_conv(x, kernel, window_strides, padding, **kwargs):
    """The substitute where it applies (3x3, stride 1, SAME, NHWC/HWIO, float32), else XLA's."""
    if _blas_conv.supported(x.shape, kernel.shape, window_strides, padding,
                            kwargs.get("dimension_numbers"), x.dtype) \
            and min(kernel.shape[2:]) >= args.min_channels:
        if args.swap == "winograd" and _winograd.supported(x.shape, kernel.shape, 1, padding):
            return _winograd.conv3x3(x, kernel)
        if args.swap != "winograd":
            return _blas_conv.conv3x3(x, kernel, args.swap)
    return direct_conv(x, kernel, window_strides, padding, **kwargs)


batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name, conv in (("xla", direct_conv), (args.swap, swapped_conv)):
    jax.lax.conv_general_dilated = conv  # looked up while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[name] = keras_comparison._JaxSide(args.variant, batch)
    jax.lax.conv_general_dilated = direct_conv
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s; train GFLOP/img "
          f"{sides[name].train_flops / args.batch_size / 1e9:.1f}", flush=True)
probs = {k: np.asarray(s.infer(s.variables, s.x)) for k, s in sides.items()}
print(f"inference outputs, max |diff|: {np.abs(probs['xla'] - probs[args.swap]).max():.2e} "
      f"(scale {np.abs(probs['xla']).max():.2e})")
time_sides(sides, "xla", args.batch_size, args.repeats)
