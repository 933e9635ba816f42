"""What each training process decodes and what it feeds, with two processes over jax.distributed
(gloo on 127.0.0.1), as pipeline.py's docstring says: every process decodes every training and
validation example once and keeps them all; it feeds only its slice of each global batch; the
slices of the two processes make up the one-process batches; and over epochs a process feeds
examples outside its first epoch's slices (why it keeps them all).

The workers are this file run as a script (`python tests/test_process_decode.py --worker ...`).
What a worker decodes is recorded by wrapping the reader `pipeline.decode_examples` calls, which
still reads every file; what it feeds is read back from its batches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import data_fixtures as fx

NUM_EXAMPLES, BATCH, SIZE, EPOCHS = 15, 4, 32, 3


def _config(root: str):
    """The base training config on a 'processed' folder: the release split (no fingerprints),
    32x32 inputs, a global batch of 4 (2 per process)."""
    from hanet_jax.train import recipes

    config = recipes.get_config()
    config.data.root, config.data.layout, config.data.split = root, "processed", "train"
    config.data.val_split = "release"
    config.model.image_size, config.batch_size = SIZE, BATCH
    return config


def _stems_of(batch_images: np.ndarray, cache) -> list[str]:
    """The cache stems of a batch's uint8 images, found by their pixels."""
    pixels = np.asarray(batch_images)
    stems = []
    for image in pixels:
        hits = np.flatnonzero((cache.images == image).all(axis=(1, 2, 3)))
        assert len(hits) == 1, f"{len(hits)} cached images match a batch image"
        stems.append(cache.stems[hits[0]])
    return stems


def fed_stems(data, config, process_index: int, process_count: int) -> dict:
    """Per training step, the stems this process feeds (as the training loop batches them: the
    host's uint8 gathers, so the pixels identify the example), and its validation stems."""
    from hanet_jax.data import pipeline

    train = [_stems_of(batch["image"], data.train) for _, batch in pipeline.iterate_batches(
        data.train, global_batch_size=config.batch_size, seed=config.seed,
        num_epochs=EPOCHS, process_index=process_index, process_count=process_count)]
    val = [stem.decode() for batch in pipeline.make_dataset(
        data.val, global_batch_size=config.batch_size, train=False, process_index=process_index,
        process_count=process_count)
        for stem, valid in zip(batch["stem"], batch["valid"]) if valid]
    return {"train": train, "val": val}


def worker(root: str, out: str, process_id: int, port: int) -> None:
    """One of two processes: `train.input.build_data` as training runs it, recording each image
    file `pipeline.decode_examples` reads, then the stems fed to this process's batches."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from hanet_jax.data import pipeline
    from hanet_jax.train import input as train_input

    decoded: list[str] = []
    read_image = pipeline.read_image

    def recording_read_image(path):  # the real reader; notes the file it reads
        decoded.append(Path(path).stem)
        return read_image(path)

    pipeline.read_image = recording_read_image
    config = _config(root)
    data = train_input.build_data(config)
    pipeline.read_image = read_image
    record = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "decoded": decoded, "cached": {"train": list(data.train.stems),
                                             "val": list(data.val.stems)},
              "fed": fed_stems(data, config, jax.process_index(), jax.process_count())}
    Path(out).write_text(json.dumps(record))


def _run_two_workers(root: Path, tmp_path: Path) -> list[dict]:
    import _train_helpers as helpers

    port = helpers.free_port()
    helpers.run_processes([[sys.executable, __file__, "--worker", "--root", str(root), "--out",
                            str(tmp_path / f"p{i}.json"), "--process_id", str(i), "--port", str(port)]
                           for i in range(2)], timeout=400)
    return [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_each_process_decodes_everything_once_and_feeds_only_its_slices(tmp_path):
    from hanet_jax.train import input as train_input

    root = tmp_path / "data"
    fx.write_processed(str(root), n=NUM_EXAMPLES)
    config = _config(str(root))
    one = train_input.build_data(config)  # this process alone: the one-process reference
    reference = fed_stems(one, config, 0, 1)
    train_stems, val_stems = list(one.train.stems), list(one.val.stems)
    per_epoch = len(train_stems) // BATCH

    records = _run_two_workers(root, tmp_path)
    assert [(r["process_index"], r["process_count"]) for r in records] == [(0, 2), (1, 2)]
    for r in records:
        # Decoded: every training and validation example, each once, in every process.
        assert sorted(r["decoded"]) == sorted(train_stems + val_stems)
        assert r["cached"] == {"train": train_stems, "val": val_stems}
    fed = [r["fed"] for r in records]
    # Fed: per step, half of the global batch each; together, the one-process batch in order.
    assert len(reference["train"]) == EPOCHS * per_epoch
    for step, batch in enumerate(reference["train"]):
        assert [len(f["train"][step]) for f in fed] == [BATCH // 2] * 2
        assert fed[0]["train"][step] + fed[1]["train"][step] == batch
    # Validation: disjoint halves in file order that make up the whole set.
    assert not set(fed[0]["val"]) & set(fed[1]["val"])
    assert sorted(fed[0]["val"] + fed[1]["val"]) == sorted(val_stems) == sorted(reference["val"])
    # Per epoch a process feeds a fraction of the examples, but a new fraction every epoch: over
    # the run it needs examples it did not feed in epoch 0, so each keeps them all.
    for f in fed:
        epochs = [{s for batch in f["train"][e * per_epoch:(e + 1) * per_epoch] for s in batch}
                  for e in range(EPOCHS)]
        assert all(len(e) == per_epoch * BATCH // 2 for e in epochs)
        assert set().union(*epochs) - epochs[0]


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    worker(args.root, args.out, args.process_id, args.port)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _main()
