"""The host feed: decode once, then deterministic per-epoch uint8 batches for any process count.

The host only gathers, shuffles, slices per process, batches and prefetches; augmentation and
the uint8 -> float conversion run on the device, inside the jitted step (``data.augment``), so an
accelerator is not starved by the host (``scripts/bench_pipeline.py`` measures the feed).

Flow:
  1. ``decode_examples`` / ``from_arrays`` -> ``DecodedDataset``: every example decoded (Pillow)
     and resized to the model size once, held in memory as uint8 (this is the cache). Random
     access to it is what makes a per-epoch permutation and mid-epoch resume cheap.
  2. ``make_dataset`` -> one epoch of local batches: the epoch's order is a permutation
     drawn from (seed, epoch); global batch ``b`` holds order positions ``[b*G, (b+1)*G)`` and
     process ``p`` keeps its contiguous slice ``[p*L, (p+1)*L)`` of it (``L = G / processes``),
     gathered from its cache. The global batch is the same whatever the number of processes or
     devices, and so is its augmentation, keyed on (seed, epoch, example index) on the device.
     Two feeders give the same batches: tf.data where TensorFlow is installed (the default) and
     a prefetching thread of numpy gathers where it is not (``config.data.feeder``).
  3. ``to_global_batch`` turns each process's local batch into ``jax.Array``s sharded over the
     mesh's data axis.

What each process decodes and keeps: all of it. Every process decodes every example of its
training and validation sets (step 1; ``train.input.build_data`` does this in each process) and
keeps all the cached arrays, though it gathers only its slice of each batch
(tests/test_process_decode.py records both with two processes). This is deliberate:

* the permutation is over all examples and is drawn again every epoch, so within a few epochs
  nearly every example has fallen into every process's slices. A process that decoded only the
  examples of one epoch's slices would have to decode from the files again every epoch, where
  now it decodes once;
* with the whole cache, any process can gather any example at any step: each computes the
  same order from (seed, epoch) on its own, without communication (that order, not the
  decoding, is what keeps the global batches bit-identical for 1, 2 or N processes), and an
  exact resume is just (step -> epoch, batch), with no record of which examples a process holds;
* the cache is small: uint8 at the model size, images and masks (about 0.65 GB per process for
  the 2,485 pairs of ``hanet-processed/BUSI/train`` at 256x256).

Validation is fed in file order, so a process's validation slices never change; it still
decodes the whole validation set (by default a fifth of the data) to keep one code path.

Batches are dicts of numpy arrays: ``image`` uint8 (B, H, W, 3), ``mask`` uint8 {0, 1}
(B, H, W, 1), ``index`` (int32 dataset index, -1 for padding); training adds ``epoch`` (int32,
per example); evaluation (``train=False``) adds ``valid`` (float32 1/0; 0 marks padding of the
last batch, whose image and mask are zeros) and ``stem`` (bytes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

from hanet_jax.data.augment import AugmentConfig  # noqa: F401  (the configs' type, re-exported)
from hanet_jax.data.layouts import DatasetError, Example, read_image, read_mask
from hanet_jax.tensorflow_cpu import tensorflow, tensorflow_available


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedDataset:
    """Decoded, resized examples: images uint8 (N, H, W, 3), masks uint8 0/1 (N, H, W, 1)."""
    images: np.ndarray
    masks: np.ndarray
    stems: tuple[str, ...]
    # Several sources concatenated (`concatenate`): (name, start, stop, weight) of each, in
    # order; an epoch then draws from them by weight (`epoch_order`). Empty: one source.
    sources: tuple[tuple[str, int, int, float], ...] = ()

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.masks.shape != self.images.shape[:3] + (1,) or len(self.stems) != n:
            raise ValueError(f"masks {self.masks.shape} / {len(self.stems)} stems do not match "
                             f"images {self.images.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def resize_image(image: np.ndarray, image_size: int | Sequence[int]) -> np.ndarray:
    """Resizes uint8 (H, W, 3) bilinearly; training and inference share this one resize.

    PIL's bilinear filter widens its support when shrinking (anti-aliasing), which matters for
    500-pixel originals going to 256.
    """
    height, width = _hw(image_size)
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return image


def resize_pair(image: np.ndarray, mask: np.ndarray, image_size: int | Sequence[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """`resize_image` for the image, nearest neighbour for the 0/1 mask (returned uint8 (h, w, 1))."""
    height, width = _hw(image_size)
    mask = np.asarray(mask, np.uint8)
    image = resize_image(image, (height, width))
    if mask.shape[:2] != (height, width):
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
    return image, mask[..., None]


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def decode_examples(examples: Sequence[Example], image_size: int | Sequence[int], *,
                    binarize_masks: bool = True, num_workers: int | None = None
                    ) -> DecodedDataset:
    """Decodes and resizes every example once (PIL releases the GIL, so threads overlap)."""
    if not examples:
        raise DatasetError("decode_examples: no examples given")
    height, width = _hw(image_size)
    images = np.empty((len(examples), height, width, 3), np.uint8)
    masks = np.empty((len(examples), height, width, 1), np.uint8)

    def load(i: int) -> None:
        example = examples[i]
        image = read_image(example.image_path)
        mask = read_mask(example.mask_paths, binarize=binarize_masks)
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{example.mask_paths[0]}: mask size {mask.shape[::-1]} differs "
                               f"from image {image.shape[1::-1]} ({example.image_path})")
        images[i], masks[i] = resize_pair(image, mask, (height, width))

    with concurrent.futures.ThreadPoolExecutor(num_workers or _default_workers()) as pool:
        list(pool.map(load, range(len(examples))))  # list() re-raises the first error
    return DecodedDataset(images, masks, tuple(e.stem for e in examples))


def from_arrays(images: np.ndarray, masks: np.ndarray, *,
                image_size: int | Sequence[int] | None = None,
                stems: Sequence[str] | None = None) -> DecodedDataset:
    """Wraps in-memory arrays: images uint8 (N, H, W[, 1|3]), masks (N, H, W[, 1]), > 0 = lesion."""
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    masks = (masks > 0).astype(np.uint8)
    if image_size is not None and _hw(image_size) != images.shape[1:3]:
        pairs = [resize_pair(i, m, image_size) for i, m in zip(images, masks)]
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
    else:
        masks = masks[..., None]
    stems = tuple(stems) if stems is not None else tuple(str(i) for i in range(len(images)))
    return DecodedDataset(np.ascontiguousarray(images), np.ascontiguousarray(masks), stems)


Source = DecodedDataset | Sequence[Example] | tuple[np.ndarray, np.ndarray] | dict


def as_decoded(source: Source, image_size: int | Sequence[int] | None = None) -> DecodedDataset:
    """Accepts a DecodedDataset, a list of Examples, (images, masks) or a dict with "image",
    "mask" and optionally "stem"."""
    if isinstance(source, DecodedDataset):
        if image_size is not None and _hw(image_size) != source.image_size:
            raise ValueError(f"decoded dataset is {source.image_size}, asked for "
                             f"{_hw(image_size)}: decode it at the model size")
        return source
    if isinstance(source, dict):
        return from_arrays(source["image"], source["mask"], image_size=image_size,
                           stems=source.get("stem"))
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], np.ndarray):
        return from_arrays(*source, image_size=image_size)
    if image_size is None:
        raise ValueError("image_size is required to decode examples")
    return decode_examples(list(source), image_size)


def steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool = True) -> int:
    """Global batches in one epoch."""
    if drop_remainder:
        return num_examples // global_batch_size
    return math.ceil(num_examples / global_batch_size)


def concatenate(parts: Sequence[tuple[str, DecodedDataset, float]]) -> DecodedDataset:
    """Several sources' decoded sets as one cache, each (name, dataset, sampling weight); the
    result's `sources` records where each lies (see `epoch_order`)."""
    if not parts:
        raise ValueError("concatenate: no sources")
    sizes = {d.image_size for _, d, _ in parts}
    if len(sizes) > 1:
        raise ValueError(f"the sources are decoded at different sizes: {sorted(sizes)}")
    ranges, start = [], 0
    for name, data, weight in parts:
        ranges.append((name, start, start + len(data), float(weight)))
        start += len(data)
    return DecodedDataset(np.concatenate([d.images for _, d, _ in parts]),
                          np.concatenate([d.masks for _, d, _ in parts]),
                          tuple(s for _, d, _ in parts for s in d.stems), tuple(ranges))


def source_of(data: DecodedDataset, name: str) -> DecodedDataset:
    """One source of a `concatenate`d set, as a dataset of its own (views, not copies)."""
    for source, start, stop, _ in data.sources:
        if source == name:
            return DecodedDataset(data.images[start:stop], data.masks[start:stop],
                                  data.stems[start:stop])
    raise KeyError(f"no source {name!r} in {[s[0] for s in data.sources]}")


def _weighted_draws(data: DecodedDataset, seed: int, epoch: int) -> np.ndarray:
    """One epoch's draws over several sources: as many as their examples together; source s
    gets round(n * w_s / sum(w)) of them (the remainder to the heaviest), each source's in
    passes of a fresh permutation of its examples (from (seed, epoch, s)). A draw's id is its
    example's index plus n times the pass it came from, so repeats of one example are distinct
    draws (`_gather` keys the device augmentation on the id)."""
    n = len(data)
    weights = np.array([w for *_, w in data.sources], np.float64)
    counts = np.floor(n * weights / weights.sum()).astype(np.int64)
    counts[int(np.argmax(weights))] += n - counts.sum()
    ids = []
    for s, ((_, start, stop, _), count) in enumerate(zip(data.sources, counts)):
        size = stop - start
        rng = np.random.default_rng([seed, epoch, s])
        passes = -(-count // size)
        local = np.concatenate([rng.permutation(size) + p * n for p in range(passes)])[:count]
        ids.append(local + start)
    return np.concatenate(ids)


def epoch_order(num_examples: int | DecodedDataset, seed: int, epoch: int, shuffle: bool = True
                ) -> np.ndarray:
    """The example order of one epoch: a permutation drawn from (seed, epoch), or identity.
    For a dataset of several sources (`concatenate`), training draws them by weight
    (`_weighted_draws`) and the order holds draw ids (index + n x pass; `% n` is the index)."""
    data = num_examples if isinstance(num_examples, DecodedDataset) else None
    n = len(data) if data is not None else num_examples
    if not shuffle:
        return np.arange(n)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    if data is not None and len(data.sources) > 1:
        draws = _weighted_draws(data, seed, epoch)
        return draws[np.random.default_rng([seed, epoch]).permutation(len(draws))]
    return np.random.default_rng([seed, epoch]).permutation(n)


def _local_indices(order: np.ndarray, global_batch_size: int, process_index: int,
                   process_count: int, drop_remainder: bool, start_batch: int) -> np.ndarray:
    """Example indices this process reads, batch after batch; -1 marks padding."""
    if global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by "
                         f"{process_count} processes")
    num_batches = steps_per_epoch(len(order), global_batch_size, drop_remainder)
    padded = np.full(num_batches * global_batch_size, -1, np.int64)
    used = min(len(order), len(padded))
    padded[:used] = order[:used]
    per_process = padded.reshape(num_batches, process_count, global_batch_size // process_count)
    return per_process[start_batch:, process_index].reshape(-1)


def _gather(data: DecodedDataset, indices: np.ndarray, *, epoch: int, train: bool,
            with_valid: bool) -> dict:
    """One local batch from the cache: uint8 images and masks (zeros where ``indices`` is -1,
    padding), each example's dataset index (a draw id, index + n x pass, for several sources)
    and the epoch (training: the device augmentation's key), and for evaluation ``valid`` and
    ``stem``."""
    valid = indices >= 0
    safe = np.where(valid, indices % len(data), 0)
    images, masks = data.images[safe], data.masks[safe]
    if not valid.all():
        images[~valid] = 0
        masks[~valid] = 0
    out = {"image": images, "mask": masks, "index": indices.astype(np.int32)}
    if train:
        out["epoch"] = np.full(len(indices), epoch, np.int32)
    if with_valid:
        out["valid"] = valid.astype(np.float32)
    if not train:
        out["stem"] = np.array([data.stems[i].encode() if i >= 0 else b"" for i in indices],
                               dtype=object)  # bytes, as tf.data gives them
    return out


def feeder_name(feeder: str = "auto") -> str:
    """"tf.data" or "numpy": ``auto`` is tf.data when TensorFlow imports, else numpy."""
    if feeder not in FEEDERS:
        raise ValueError(f"feeder must be one of {FEEDERS}, got {feeder!r}")
    if feeder == "auto":
        return "tf.data" if tensorflow_available() else "numpy"
    return feeder


FEEDERS = ("auto", "tf.data", "numpy")


def make_dataset(source: Source, *, global_batch_size: int, seed: int = 0, train: bool,
                 image_size: int | Sequence[int] | None = None, epoch: int = 0,
                 start_batch: int = 0, process_index: int | None = None,
                 process_count: int | None = None, drop_remainder: bool | None = None,
                 prefetch: int = 2, feeder: str = "auto") -> Iterator[dict]:
    """One epoch of this process's local batches, as numpy dicts (see the module docstring).

    Args:
      source: a ``DecodedDataset`` (decode once and reuse it across epochs), a list of
        ``Example``s, or in-memory arrays (decoded on every call).
      global_batch_size: examples per step over all processes.
      seed, epoch: fix the order (train); the device augmentation keys on (seed, epoch, index).
      train: shuffle and add ``epoch``; otherwise keep file order and add ``valid`` and ``stem``.
      image_size: the model size; needed unless ``source`` is already decoded.
      start_batch: skip the first global batches of the epoch (resume mid-epoch).
      process_index, process_count: default to ``jax.process_index()/process_count()``.
      drop_remainder: drop the last partial global batch; default True for training and False
        for evaluation, where it is padded and marked by ``valid``.
      prefetch: batches gathered ahead of the consumer.
      feeder: ``tf.data``, ``numpy`` (a prefetching thread) or ``auto`` (``feeder_name``);
        the batches are the same.
    """
    data = as_decoded(source, image_size)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    drop_remainder = train if drop_remainder is None else drop_remainder
    order = epoch_order(data, seed, epoch, shuffle=train)
    indices = _local_indices(order, global_batch_size, process_index, process_count,
                             drop_remainder, start_batch)
    batches = indices.reshape(-1, global_batch_size // process_count)

    with_valid = not train or not drop_remainder
    if feeder_name(feeder) == "tf.data":
        return _tf_data_batches(data, batches, epoch=epoch, train=train, with_valid=with_valid,
                                prefetch=prefetch)
    return _prefetched((_gather(data, rows, epoch=epoch, train=train, with_valid=with_valid)
                        for rows in batches), prefetch)


def _prefetched(batches: Iterator[dict], depth: int) -> Iterator[dict]:
    """``batches`` computed ``depth`` ahead in a daemon thread (numpy's gathers release the
    GIL for their copies, so the feed overlaps the step's dispatch)."""
    if depth <= 0:
        yield from batches
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        buffer.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as e:  # re-raised in the consumer
            buffer.put(e)

    thread = threading.Thread(target=produce, daemon=True, name="hanet-feed")
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early (break, error): let the producer end
        stop.set()
        thread.join(timeout=5)


def _tf_data_batches(data: DecodedDataset, batches: np.ndarray, *, epoch: int, train: bool,
                     with_valid: bool, prefetch: int) -> Iterator[dict]:
    """``_gather``'s batches as a tf.data pipeline of native gathers from the cache held as
    tensors (``_tf_cache``), prefetched by tf.data's own threads. A ``numpy_function`` per batch
    instead fed about 7,100 images/s at 256x256 here, against 37,000 for numpy alone: it copies
    every batch in and out of Python."""
    tf = tensorflow()
    images, masks, stems = _tf_cache(data)

    def gather(rows):
        valid = rows >= 0
        safe = tf.math.floormod(tf.maximum(rows, 0), len(data))  # draw ids: index + n x pass
        out = {"image": tf.gather(images, safe), "mask": tf.gather(masks, safe),
               "index": tf.cast(rows, tf.int32)}
        if with_valid:  # padding can occur: zero it (a pass over the batch training skips)
            keep = tf.cast(valid, tf.uint8)[:, None, None, None]
            out["image"], out["mask"] = out["image"] * keep, out["mask"] * keep
        if train:
            out["epoch"] = tf.fill(tf.shape(rows), tf.constant(epoch, tf.int32))
        if with_valid:
            out["valid"] = tf.cast(valid, tf.float32)
        if not train:
            out["stem"] = tf.where(valid, tf.gather(stems, safe), b"")
        return out

    options = tf.data.Options()
    options.deterministic = True
    dataset = (tf.data.Dataset.from_tensor_slices(batches)
               .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(prefetch)
               .with_options(options))
    return dataset.as_numpy_iterator()


_TF_CACHES: dict = {}


def _tf_cache(data: DecodedDataset):
    """The cache's arrays as TensorFlow tensors, converted once per dataset (not per epoch)."""
    key = id(data)
    held = _TF_CACHES.get(key)
    if held is None or held[0] is not data:
        tf = tensorflow()
        with tf.device("CPU:0"):
            held = (data, tf.constant(data.images), tf.constant(data.masks),
                    tf.constant(data.stems or ("",), tf.string))
        while len(_TF_CACHES) >= 2:  # a run's training and validation sets
            _TF_CACHES.pop(next(iter(_TF_CACHES)))
        _TF_CACHES[key] = held
    return held[1:]


def iterate_batches(source: Source, *, global_batch_size: int, start_step: int = 0,
                    num_epochs: int | None = None, drop_remainder: bool = True,
                    **make_dataset_kwargs) -> Iterator[tuple[int, dict]]:
    """Yields ``(step, local numpy batch)`` for training from global ``start_step`` on.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, so a run
    resumed from a checkpoint at step ``s`` sees exactly the batches an uninterrupted run would.
    """
    data = as_decoded(source, make_dataset_kwargs.pop("image_size", None))
    per_epoch = steps_per_epoch(len(data), global_batch_size, drop_remainder)
    if per_epoch == 0:
        raise DatasetError(f"{len(data)} examples do not fill one global batch of "
                           f"{global_batch_size}")
    step = start_step
    epoch, start_batch = divmod(start_step, per_epoch)
    while num_epochs is None or epoch < num_epochs:
        for batch in make_dataset(data, global_batch_size=global_batch_size, train=True,
                                  epoch=epoch, start_batch=start_batch,
                                  drop_remainder=drop_remainder, **make_dataset_kwargs):
            yield step, batch
            step += 1
        epoch, start_batch = epoch + 1, 0


def to_global_batch(local_batch: dict, mesh: jax.sharding.Mesh, data_axis: str = "data"
                    ) -> dict[str, jax.Array]:
    """Assembles each process's local batch into global arrays sharded on the batch dimension.

    Non-numeric entries (``stem``) are left out: keep them from the local batch. uint8 stays
    uint8: the train and eval steps convert on the device (``data.augment.device_batch``).
    """
    sharding = NamedSharding(mesh, PartitionSpec(data_axis))
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "biuf":
            out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
