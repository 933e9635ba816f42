"""The 3x3 SAME conv as a substitute vs XLA's conv, forward and forward + backward, at the
shapes that lead the bench's trace (`trace_train_step.py`).

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/conv3x3_swap.py --swap winograd [--batch_size 4]
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/conv3x3_swap.py --swap blas_dw

winograd (`_winograd.py`, round 6): 16 multiplications per 2x2 output tile and (C_in, C_out)
pair instead of 36, and a backward made of GEMMs, where XLA:CPU's own weight gradient runs at
25-55 GFLOP/s behind two layout transposes (round 5). blas_dw / blas_all (`_blas_conv.py`,
round 7): the weight gradient (and the forward) as nine row-offset GEMMs in numpy's BLAS,
through a host callback; ffi_dw: the same weight gradient in an FFI custom call (`_blas_ffi.py`). The script prints the largest difference from XLA's conv next to the
output's scale (rounding: they agree in real arithmetic). Batch 4 on one core is each
device's share of the bench under the CPU split.
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
import _blas_conv  # noqa: E402
import _winograd  # noqa: E402

from _conv3x3 import SHAPES, conv  # noqa: E402


def fwd_bwd(fn):
    def run(x, w, dy):
        out, vjp = jax.vjp(fn, x, w)
        return vjp(dy)
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--swap", choices=["winograd", "blas_dw", "blas_all", "ffi_dw", "ffi_all"], required=True)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    swap = (_winograd.conv3x3 if args.swap == "winograd"
            else lambda x, w: _blas_conv.conv3x3(x, w, args.swap))
    fns = {"fwd xla": jax.jit(conv), "fwd swap": jax.jit(swap),
           "train xla": jax.jit(fwd_bwd(conv)), "train swap": jax.jit(fwd_bwd(swap))}
    tot = dict.fromkeys(fns, 0.0)
    for h, wd, c, f in SHAPES:
        x = jnp.asarray(rng.standard_normal((args.batch_size, h, wd, c), np.float32))
        w = jnp.asarray(rng.standard_normal((3, 3, c, f), np.float32) * (2 / (9 * c)) ** 0.5)
        dy = jnp.asarray(rng.standard_normal((args.batch_size, h, wd, f), np.float32))
        y_ref, y_win = fns["fwd xla"](x, w), fns["fwd swap"](x, w)
        (dx_ref, dw_ref), (dx_win, dw_win) = fns["train xla"](x, w, dy), fns["train swap"](x, w, dy)
        rel = {name: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
               for name, a, b in (("y", y_ref, y_win), ("dx", dx_ref, dx_win), ("dw", dw_ref, dw_win))}
        sec = keras_comparison.interleaved_medians(
            {k: (lambda fn=fn, args=(x, w, dy) if k.startswith("train") else (x, w):
                 jax.block_until_ready(fn(*args)))
             for k, fn in fns.items()}, args.repeats)
        for k in tot:
            tot[k] += sec[k]
        print(f"{args.batch_size}x{h}x{wd} {c}->{f}: fwd xla {1e3 * sec['fwd xla']:6.1f} ms, {args.swap} "
              f"{1e3 * sec['fwd swap']:6.1f} ms ({sec['fwd xla'] / sec['fwd swap']:.2f}x); "
              f"fwd+bwd xla {1e3 * sec['train xla']:6.1f} ms, {args.swap} {1e3 * sec['train swap']:6.1f} ms "
              f"({sec['train xla'] / sec['train swap']:.2f}x); max |diff| / max |ref|: "
              + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()), flush=True)
    print(f"sum over the shapes: fwd {1e3 * tot['fwd xla']:.0f} -> {1e3 * tot['fwd swap']:.0f} ms "
          f"({tot['fwd xla'] / tot['fwd swap']:.2f}x), fwd+bwd {1e3 * tot['train xla']:.0f} -> "
          f"{1e3 * tot['train swap']:.0f} ms ({tot['train xla'] / tot['train swap']:.2f}x)")


if __name__ == "__main__":
    main()
