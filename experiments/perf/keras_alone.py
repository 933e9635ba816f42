"""The Keras original's train and inference images/s with no JAX work in the process (bench.py
times both frameworks in one process, where their thread pools compete).

    PYTHONPATH=. python experiments/perf/keras_alone.py --mode system   # glibc's malloc defaults
    PYTHONPATH=. python experiments/perf/keras_alone.py --mode keep     # hanet_jax.ops.cpu.host_memory
"""

import argparse

import numpy as np

from hanet_jax.ops.cpu import host_memory


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("system", "keep"), required=True)
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.mode == "keep":
        host_memory.keep_freed_host_memory()
    from hanet_jax.bench import keras_comparison

    batch = keras_comparison.synthetic_batch(args.batch_size, (args.image_size,) * 2)
    keras = keras_comparison._KerasSide("full", batch)
    seconds = keras_comparison.interleaved_medians({"train": keras.train_once, "infer": keras.infer_once},
                                                   args.repeats)
    print(f"{args.mode}: Keras alone, train {args.batch_size / seconds['train']:.2f} img/s, "
          f"inference {args.batch_size / seconds['infer']:.2f} img/s")


if __name__ == "__main__":
    main()
