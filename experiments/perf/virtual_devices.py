"""The bench train step and inference on one XLA:CPU device vs data-parallel over N, in ONE process.

    PYTHONPATH=. .venv/bin/python experiments/perf/virtual_devices.py [--devices 2] [--image_size 256 --batch_size 8]

One XLA:CPU device runs the step's ops on a 2-thread pool and keeps the two cores ~70% busy
(`top` shows ~137% for a training process), while two training processes side by side gave
~1.4x the images/s of one. Here the host is split into N devices (`jax_num_cpu_devices`, as
`hanet_jax/ops/cpu/devices.py` does for train.py and bench.py); the same step is compiled once for
device 0 alone and once with the batch sharded over all N (as train.py shards it over a mesh:
BatchNorm still normalises over the global batch), and the two are timed interleaved
(`keras_comparison.interleaved_medians`), so machine noise hits both alike.
"""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, default=2)
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--image_size", type=int, default=256)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()

from hanet_jax.ops.cpu import host_memory  # noqa: E402

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", args.devices)
from hanet_jax.bench import keras_comparison  # noqa: E402

batch = keras_comparison.synthetic_batch(args.batch_size, (args.image_size,) * 2)
one = keras_comparison._JaxSide("full", batch, devices=1)
many = keras_comparison._JaxSide("full", batch)
assert many.devices == args.devices, many.devices
sec = keras_comparison.interleaved_medians({"train_1": one.train_once, f"train_{args.devices}": many.train_once,
                                            "infer_1": one.infer_once, f"infer_{args.devices}": many.infer_once},
                                           args.repeats)
for kind in ("train", "infer"):
    a, b = args.batch_size / sec[f"{kind}_1"], args.batch_size / sec[f"{kind}_{args.devices}"]
    print(f"{args.image_size}x{args.image_size} batch {args.batch_size}, {kind}: 1 device {a:.2f} img/s, "
          f"{args.devices} devices {b:.2f} img/s ({b / a:.2f}x)", flush=True)
