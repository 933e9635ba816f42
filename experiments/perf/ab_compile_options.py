"""A/B of XLA compile options on the real bench train step and inference, in ONE process.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_compile_options.py --configs base,eigen_conv [--image_size 256]

XLA_FLAGS are process-wide, and on this shared 2-core machine two processes minutes apart
differ by up to ~20% with identical settings. Debug options can also be given per executable
(`jax.jit(f).lower(...).compile(options)`), so here every configuration is compiled in the same
process and timed interleaved (`keras_comparison.interleaved_medians`). A repeated option such as
`xla_cpu_experimental_ynn_fusion_type` takes one enum value this way, which replaces the default
list (YNNPACK for dots and convolutions).
The CPU is split into devices as bench.py splits it (HANET_CPU_DEVICES=1 for one device).
"""
import argparse
import time

from _bench_process import set_up_like_bench

CONFIGS = {
    "base": {},
    # Convolutions on XLA's own (Eigen) path, dots still on YNNPACK.
    "eigen_conv": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    # No concurrent execution of independent ops (they compete for the two cores).
    "serial_scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": False},
    # 512-bit vectors for XLA's own loop code (BatchNorm, ReLU, concatenation) on AVX-512.
    "vector512": {"xla_cpu_prefer_vector_width": 512},
    # One intra-op thread per device: under the CPU split two devices share two cores, so each
    # device's pool of two threads oversubscribes them.
    "single_thread": {"xla_cpu_multi_thread_eigen": False},
    # YNNPACK's DOT fusion type: the elementwise ops around a dot or conv (BatchNorm's affine,
    # ReLU) join it in one YNNPACK subgraph instead of each writing its output to memory.
    # A comma-separated string sets the repeated option's whole list.
    "ynn_dot": {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    # The same, plus YNNPACK for standalone elementwise ops and reductions.
    "ynn_all": {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,"
                "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"},
}

parser = argparse.ArgumentParser()
parser.add_argument("--configs", default="base,eigen_conv", help=f"comma-separated, from {sorted(CONFIGS)}")
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--image_size", type=int, default=256)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()
set_up_like_bench(args.batch_size)
from hanet_jax.bench import keras_comparison  # noqa: E402

batch = keras_comparison.synthetic_batch(args.batch_size, (args.image_size, args.image_size))
names = args.configs.split(",")
sides = {}
for name in names:
    t0 = time.perf_counter()
    sides[name] = keras_comparison._JaxSide("full", batch, CONFIGS[name] or None)
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
fns = {f"{n} train": s.train_once for n, s in sides.items()}
fns.update({f"{n} infer": s.infer_once for n, s in sides.items()})
sec = keras_comparison.interleaved_medians(fns, args.repeats)
for k, v in sec.items():
    kind = k.split()[-1]
    print(f"{k:24s} {1e3 * v:8.0f} ms/batch  {args.batch_size / v:6.2f} img/s  "
          f"vs {names[0]}: {sec[f'{names[0]} {kind}'] / v:.2f}x", flush=True)
