"""Images/s the input pipeline alone delivers, from its decoded cache, with augmentation on.

    python scripts/bench_pipeline.py --data_dir=/path/to/hanet-processed/BUSI
    python scripts/bench_pipeline.py            # in-memory random arrays instead

Prints one JSON line. Decoding into the cache is timed separately (``decode_s``); the rate
is measured after ``--warmup`` batches, over ``--batches`` batches (crossing epochs if needed).
"""

import json
import os
import sys
import time

import numpy as np
from absl import flags

from hanet_jax import command_line
from hanet_jax.data import layouts, pipeline

AUGMENTS = {"all": pipeline.AugmentConfig.all_on(), "release": pipeline.AugmentConfig(),
            "none": None}


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("data_dir", None, "dataset folder; omit for in-memory arrays", flag_values=fv)
    flags.DEFINE_enum("layout", "processed", layouts.LAYOUTS, "dataset layout", flag_values=fv)
    flags.DEFINE_string("split", "train", "split folder", flag_values=fv)
    flags.DEFINE_integer("image_size", 256, "model input side in pixels", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "global batch size", flag_values=fv)
    flags.DEFINE_integer("num_examples", 512, "in-memory arrays only", flag_values=fv)
    flags.DEFINE_enum("augment", "all", sorted(AUGMENTS), "augmentations", flag_values=fv)
    flags.DEFINE_integer("warmup", 20, "batches before timing", flag_values=fv)
    flags.DEFINE_integer("batches", 200, "timed batches", flag_values=fv)


COMMAND = command_line.Command("python scripts/bench_pipeline.py", __doc__, _define_flags)


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

    batches = pipeline.iterate_batches(data, global_batch_size=args.batch_size, seed=0,
                                       augment=AUGMENTS[args.augment])
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    images = sum(len(next(batches)[1]["image"]) for _ in range(args.batches))
    seconds = time.perf_counter() - start
    print(json.dumps({
        "images_per_s": round(images / seconds, 1), "source": source, "examples": len(data),
        "image_size": args.image_size, "global_batch_size": args.batch_size,
        "augment": args.augment, "decode_s": round(decode_s, 2), "measured_batches": args.batches,
        "cpu_count": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
