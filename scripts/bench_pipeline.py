"""The host feed in images/s, and the device augmentation's share of the train step.

    python scripts/bench_pipeline.py                                  # in-memory arrays, 256x256
    python scripts/bench_pipeline.py --data_dir=/path/to/hanet-processed/BUSI
    python scripts/bench_pipeline.py --step_batch=0                   # the feed alone

Prints one JSON line.
- ``feed``: images/s the host delivers per feeder (``tf.data`` where TensorFlow is installed, and
  ``numpy``): gather, shuffle, per-process slice, batch and prefetch of the cached uint8 arrays,
  measured after ``--warmup`` batches over ``--batches`` (crossing epochs if needed). Decoding into
  the cache is timed apart (``decode_s``).
- ``augment``: the jitted train step of the default HA-Net at ``--step_batch``, with every
  augmentation on (``data.augment.device_batch`` inside the step) and with none, the median of
  ``--repeats`` calls each, and the augmentation jitted alone: ``share`` = alone / the step with
  it. ``share_by_difference`` = (with - without) / with says the same where the difference is
  above the timing noise; on a CPU, whose steps take seconds, it is not.
"""

import json
import os
import statistics
import sys
import time

import jax
import numpy as np
from absl import flags

from hanet_jax import command_line
from hanet_jax.data import augment, layouts, pipeline


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("data_dir", None, "dataset folder; omit for in-memory arrays", flag_values=fv)
    flags.DEFINE_enum("layout", "processed", layouts.LAYOUTS, "dataset layout", flag_values=fv)
    flags.DEFINE_string("split", "train", "split folder", flag_values=fv)
    flags.DEFINE_integer("image_size", 256, "model input side in pixels", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "global batch size of the feed", flag_values=fv)
    flags.DEFINE_integer("num_examples", 512, "in-memory arrays only", flag_values=fv)
    flags.DEFINE_integer("warmup", 20, "batches before timing", flag_values=fv)
    flags.DEFINE_integer("batches", 300, "timed batches", flag_values=fv)
    flags.DEFINE_integer("step_batch", 8, "batch of the timed train steps (0: skip them)",
                         flag_values=fv)
    flags.DEFINE_integer("repeats", 3, "timed train steps per side", flag_values=fv)


COMMAND = command_line.Command("python scripts/bench_pipeline.py", __doc__, _define_flags)


def _feed_rate(data, feeder: str, args) -> float:
    batches = pipeline.iterate_batches(data, global_batch_size=args.batch_size, seed=0,
                                       feeder=feeder)
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    images = sum(len(next(batches)[1]["image"]) for _ in range(args.batches))
    rate = images / (time.perf_counter() - start)
    batches.close()
    return rate


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _augmentation_share(data, args) -> dict:
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train import recipes
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import batch_sharded, make_mesh
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import compiled_steps

    config = recipes.get_config()
    config.model.image_size = args.image_size
    model = model_from_config(resolve_model_config(config.model.to_dict(), ""))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    mesh = make_mesh()
    local = next(pipeline.iterate_batches(data, global_batch_size=args.step_batch, seed=0,
                                          feeder="numpy"))[1]
    batch = jax.device_put(local, batch_sharded(mesh))
    all_on = augment.AugmentConfig.all_on()
    seconds = {}
    for name, config_ in (("with", all_on), ("without", None)):
        steps = compiled_steps(model, config.loss, tx, mesh, augment=config_)
        state = create_train_state(model, args.image_size, tx, plateau, 0, mesh)
        holder = {"state": state}

        def step():
            holder["state"], metrics = steps.train(holder["state"], batch)
            return metrics
        seconds[name] = _median_seconds(step, args.repeats)
    alone = jax.jit(lambda b: augment.device_batch(b, augment=all_on, seed=0))
    alone_s = _median_seconds(lambda: alone(batch), max(args.repeats, 5))
    return {"step_batch": args.step_batch, "train_step_s_with": round(seconds["with"], 3),
            "train_step_s_without": round(seconds["without"], 3),
            "alone_ms_per_image": round(1000 * alone_s / args.step_batch, 3),
            "share": round(alone_s / seconds["with"], 4),
            "share_by_difference": round((seconds["with"] - seconds["without"]) / seconds["with"],
                                         4),
            "device": jax.devices()[0].device_kind, "devices": jax.device_count()}


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    start = time.perf_counter()
    if args.data_dir:
        examples = layouts.list_examples(args.data_dir, args.layout, args.split)
        data = pipeline.decode_examples(examples, args.image_size)
        source = args.data_dir
    else:
        rng = np.random.default_rng(0)
        shape = (args.num_examples, args.image_size, args.image_size)
        data = pipeline.from_arrays(rng.integers(0, 256, shape + (3,), np.uint8),
                                    rng.random(shape) > 0.8)
        source = "in-memory arrays"
    decode_s = time.perf_counter() - start
    feeders = ["numpy"] + (["tf.data"] if pipeline.feeder_name("auto") == "tf.data" else [])
    feed = {f: round(_feed_rate(data, f, args), 1) for f in feeders}
    result = {"feed_images_per_s": feed, "source": source, "examples": len(data),
              "image_size": args.image_size, "global_batch_size": args.batch_size,
              "decode_s": round(decode_s, 2), "measured_batches": args.batches,
              "cpu_count": os.cpu_count()}
    if args.step_batch:
        result["augment"] = _augmentation_share(data, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
