"""Benchmark our HA-Net against the Keras original in one run: parameters, FLOPs, memory, speed.
Each side runs in its own worker process, timed in turns (`--same_process`: both in this one).

    python bench.py --variant=full --batch_size=8 --json=/tmp/bench_full.json
    python bench.py --variant=baseline --image_size=64 --batch_size=2 --repeats=1 --no_keras
    python bench.py --image_size=256,320 ...   # H,W
    python bench.py --architecture=unet --json=/tmp/bench_unet.json   # a baseline (no Keras side)

`hanet-bench` is the same command. The logic and the meaning of every field are in
`hanet_jax/bench/keras_comparison.py`. On a CPU host the run ends with the serving latency of
the Flax model, its exported `model.jax` and onnxruntime on its `model.onnx`, at batch 1 and 8
(`hanet_jax/bench/serving_latency.py`; `--noserving` skips it; the `onnx` extra is needed).
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import flags

from hanet_jax import command_line
from hanet_jax.models.architectures import ARCHITECTURES
from hanet_jax.json_files import write_json


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("variant", "full", ("full", "no_tam", "no_tam_no_sfeb", "baseline"),
                      "the HA-Net variant", flag_values=fv)
    flags.DEFINE_enum("architecture", "hanet", tuple(ARCHITECTURES),
                      "the network: HA-Net (its --variant), or a baseline (no Keras original: "
                      "then --no_keras and no serving table)", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "images per step", flag_values=fv)
    command_line.DEFINE_integer_list("image_size", [256], "H[,W], multiples of 32", flag_values=fv)
    flags.register_validator("image_size", lambda size: len(size) in (1, 2),
                             "--image_size takes H or H,W", flag_values=fv)
    flags.DEFINE_integer("repeats", 5, "timed repeats per measurement (median taken)", flag_values=fv)
    flags.DEFINE_bool("no_keras", False, "skip the Keras original (e.g. on GPU/TPU)", flag_values=fv)
    flags.DEFINE_integer("matmul_n", 2048, "size of the peak-matmul probe", flag_values=fv)
    flags.DEFINE_bool("same_process", False,
                      "build and time both sides in this process (as before 2026-12-01) instead of "
                      "one worker process each; their thread pools then compete", flag_values=fv)
    flags.DEFINE_bool("serving", True, "also time CPU serving: Flax, model.jax and onnxruntime at batch 1 and 8",
                      flag_values=fv)
    flags.DEFINE_integer("serving_repeats", 20, "timed repeats per serving-latency measurement", flag_values=fv)
    flags.DEFINE_string("json", None, "write the result here", flag_values=fv)


COMMAND = command_line.Command("python bench.py", __doc__, _define_flags)


def main(argv: list[str] | None = None) -> int:
    argv = command_line.argv_or_sys(argv)
    args = COMMAND.parse(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before anything imports Keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hanet_jax.ops.cpu import devices as cpu_devices
    from hanet_jax.ops.cpu import host_memory

    # What each side's worker process does first (keras_comparison._side_worker); here it
    # matters only with --same_process, where it is process-wide and the Keras side gets it too.
    host_memory.keep_freed_host_memory_if_cpu_only()
    try:  # our side's data parallelism on a CPU-only host (hanet_jax/ops/cpu/devices.py)
        cpu_devices.split_cpu_if_cpu_only(args.batch_size)
    except ValueError as e:
        COMMAND.usage_error(str(e))
    from hanet_jax.bench import keras_comparison as bench_lib

    size = args.image_size if len(args.image_size) == 2 else args.image_size * 2
    baseline = args.architecture != "hanet"
    result = bench_lib.run(args.variant, args.batch_size, size, repeats=args.repeats,
                           keras=not (args.no_keras or baseline), architecture=args.architecture,
                           matmul_n=args.matmul_n, command=shlex.join(["python", "bench.py", *argv]),
                           isolate=not args.same_process)
    tables = [bench_lib.markdown_table(result)]
    if args.serving and not baseline and result["device"]["platform"] == "cpu":
        from hanet_jax.bench import serving_latency

        result["serving"] = serving_latency.run(args.variant, size, repeats=args.serving_repeats)
        tables.append(serving_latency.markdown_table(result["serving"]))
    if args.json:
        write_json(args.json, result)
    print("\n\n".join(tables))
    return 0


def run() -> None:
    """The `hanet-bench` console script."""
    sys.exit(main())
