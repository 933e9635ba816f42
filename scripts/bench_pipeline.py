"""Images/s the input pipeline alone delivers, from its decoded cache, with augmentation on.

    python scripts/bench_pipeline.py --data_dir /path/to/hanet-processed/BUSI
    python scripts/bench_pipeline.py            # in-memory random arrays instead

Prints one JSON line. Decoding into the cache is timed separately (``decode_s``); the rate
is measured after ``--warmup`` batches, over ``--batches`` batches (crossing epochs if needed).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hanet_jax.data import layouts, pipeline  # pylint: disable=wrong-import-position

AUGMENTS = {"all": pipeline.AugmentConfig.all_on(), "release": pipeline.AugmentConfig(),
            "none": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="dataset folder; omit for in-memory arrays")
    parser.add_argument("--layout", default="processed", choices=layouts.LAYOUTS)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8, help="global batch size")
    parser.add_argument("--num_examples", type=int, default=512, help="in-memory arrays only")
    parser.add_argument("--augment", choices=sorted(AUGMENTS), default="all")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
