"""tf.data input pipeline: decode once, then deterministic per-epoch batches for any process count.

Flow:
  1. ``decode_examples`` / ``from_arrays`` -> ``DecodedDataset``: every example decoded and
     resized to the model size once, held in memory as uint8 (this is the cache). Random
     access to it is what makes a per-epoch permutation and mid-epoch resume cheap.
  2. ``make_dataset`` -> ``tf.data.Dataset`` for one epoch: the epoch's order is a permutation
     drawn from (seed, epoch); global batch ``b`` holds order positions ``[b*G, (b+1)*G)`` and
     process ``p`` keeps its contiguous slice ``[p*L, (p+1)*L)`` of it (``L = G / processes``).
     Each process gathers from its cache and augments only its own slice, and the global batch
     is the same whatever the number of processes or devices. Augmentation uses stateless random
     ops seeded from (seed, epoch, example index), so it does not depend on them either.
  3. ``to_global_batch`` turns each process's local batch into ``jax.Array``s sharded over the
     mesh's data axis.

What each process decodes: all of it. Every process decodes every example of its training and
validation sets (step 1; ``train.input.build_data`` does this in each process) and keeps the
whole cache, though it feeds only its slices (tests/test_process_decode.py records both with two
processes). This is deliberate:

* the permutation is over all examples and is drawn again every epoch, so within a few epochs
  nearly every example has fallen into every process's slices. A process that decoded only the
  examples of one epoch's slices would have to decode from the files again every epoch, where
  now it decodes once;
* with the whole cache, any process can gather any example at any step: each computes the
  same order from (seed, epoch) on its own, without communication (that order, not the
  decoding, is what keeps the global batches bit-identical for 1, 2 or N processes), and an
  exact resume is just (step -> epoch, batch), with no record of which examples a process holds;
* the cache is small: uint8 at the model size, images and masks (about 0.65 GB per process for
  the 2,485 pairs of ``hanet-processed/BUSI/train`` at 256x256);
* device-side augmentation (a planned change) gathers each process's slice of a batch from
  all the cached arrays in the same way.

Validation is fed in file order, so a process's validation slices never change; it still
decodes the whole validation set (by default a fifth of the data) to keep one code path.

Batches are dicts: ``image`` float32 [0, 1] (B, H, W, 3), ``mask`` float32 {0, 1} (B, H, W, 1);
evaluation (``train=False``) adds ``valid`` (float32 1/0; 0 marks padding of the last batch),
``index`` (int32, -1 for padding) and ``stem`` (bytes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

from hanet_jax.data.layouts import DatasetError, Example, read_image, read_mask
from hanet_jax.tensorflow_cpu import tensorflow

tf = tensorflow()  # the CPU alone: a GPU or TPU stays JAX's


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Online augmentation, each part switchable. The HA-Net release used horizontal flips only."""
    hflip: bool = True
    vflip: bool = False
    affine: bool = False
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.05  # fraction of the image side
    brightness_contrast: bool = False
    max_brightness: float = 0.1  # added to [0, 1] intensities
    contrast_range: tuple[float, float] = (0.8, 1.2)
    speckle: bool = False
    speckle_std: float = 0.1  # multiplicative noise: image * (1 + std * N(0, 1))

    @classmethod
    def all_on(cls, **overrides) -> "AugmentConfig":
        """Every augmentation enabled (benchmarks, tests)."""
        return cls(**{"hflip": True, "vflip": True, "affine": True, "brightness_contrast": True,
                      "speckle": True, **overrides})


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedDataset:
    """Decoded, resized examples: images uint8 (N, H, W, 3), masks uint8 0/1 (N, H, W, 1)."""
    images: np.ndarray
    masks: np.ndarray
    stems: tuple[str, ...]

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


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The example order of one epoch: a permutation drawn from (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(num_examples)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


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


def _affine_transform(seed: tf.Tensor, height: int, width: int, config: AugmentConfig
                      ) -> tf.Tensor:
    """A random rotation/scale/shift about the centre, as the output->input map of
    ``ImageProjectiveTransformV3`` (8 coefficients)."""
    u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    angle = u[0] * (config.max_rotate_deg * math.pi / 180.0)
    low, high = config.scale_range
    scale = low + (u[1] + 1.0) * 0.5 * (high - low)
    shift_x, shift_y = u[2] * config.max_shift * width, u[3] * config.max_shift * height
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # input = R(-angle)/scale @ (output - centre - shift) + centre
    a2 = cx - (cos * (cx + shift_x) + sin * (cy + shift_y))
    b2 = cy - (-sin * (cx + shift_x) + cos * (cy + shift_y))
    return tf.stack([cos, sin, a2, -sin, cos, b2, 0.0, 0.0])[None]


def _warp(image: tf.Tensor, transform: tf.Tensor, interpolation: str) -> tf.Tensor:
    height, width = image.shape[0], image.shape[1]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=[height, width],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")[0]


def _deterministic_mean(image: tf.Tensor) -> tf.Tensor:
    """Mean via an exact integer sum: TF's threaded float reductions vary in the last bit from
    run to run, which would break bit-identical resumes."""
    fixed = tf.cast(tf.round(image * 65536.0), tf.int64)
    return tf.cast(tf.reduce_sum(fixed), tf.float32) / (65536.0 * float(image.shape.num_elements()))


def augment_example(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, config: AugmentConfig
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """Augments one float image (H, W, 3) in [0, 1] and its mask (H, W, 1) with one seed.

    Geometric parts move image and mask together (nearest-neighbour for the mask, so it stays
    0/1); intensity parts touch the image only.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    if config.hflip:
        flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        image = tf.where(flip, tf.reverse(image, [1]), image)
        mask = tf.where(flip, tf.reverse(mask, [1]), mask)
    if config.vflip:
        flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image = tf.where(flip, tf.reverse(image, [0]), image)
        mask = tf.where(flip, tf.reverse(mask, [0]), mask)
    if config.affine:
        transform = _affine_transform(seeds[2], image.shape[0], image.shape[1], config)
        image = _warp(image, transform, "BILINEAR")
        mask = _warp(mask, transform, "NEAREST")
    if config.brightness_contrast:
        low, high = config.contrast_range
        contrast = tf.random.stateless_uniform([], seeds[3], low, high)
        brightness = tf.random.stateless_uniform([], seeds[4], -config.max_brightness,
                                                 config.max_brightness)
        mean = _deterministic_mean(image)
        image = (image - mean) * contrast + mean + brightness
    if config.speckle:
        # One noise field for all channels: ultrasound is grey, replicated to RGB.
        noise = tf.random.stateless_normal(image.shape[:2] + (1,), seeds[5])
        image = image * (1.0 + config.speckle_std * noise)
    return tf.clip_by_value(image, 0.0, 1.0), mask


def make_dataset(source: Source, *, global_batch_size: int, seed: int = 0, train: bool,
                 image_size: int | Sequence[int] | None = None,
                 augment: AugmentConfig | None = None, epoch: int = 0, start_batch: int = 0,
                 process_index: int | None = None, process_count: int | None = None,
                 drop_remainder: bool | None = None, prefetch: int = 2) -> tf.data.Dataset:
    """One epoch of batches for this process (see the module docstring).

    Args:
      source: a ``DecodedDataset`` (decode once and reuse it across epochs), a list of
        ``Example``s, or in-memory arrays (decoded on every call).
      global_batch_size: examples per step over all processes.
      seed, epoch: fix the order (train) and the augmentation.
      train: shuffle and augment; otherwise keep file order, no augmentation, and add
        ``valid``/``index``/``stem``.
      image_size: the model size; needed unless ``source`` is already decoded.
      augment: augmentation for training (None: none).
      start_batch: skip the first global batches of the epoch (resume mid-epoch).
      process_index, process_count: default to ``jax.process_index()/process_count()``.
      drop_remainder: drop the last partial global batch; default True for training and False
        for evaluation, where it is padded and marked by ``valid``.
    """
    data = as_decoded(source, image_size)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    drop_remainder = train if drop_remainder is None else drop_remainder
    order = epoch_order(len(data), seed, epoch, shuffle=train)
    indices = _local_indices(order, global_batch_size, process_index, process_count,
                             drop_remainder, start_batch)
    local_batch_size = global_batch_size // process_count
    height, width = data.image_size
    stems = tf.constant(data.stems)
    base_seed = tf.constant([seed, epoch], tf.int64)

    def gather(index):
        return data.images[index], data.masks[index]

    def load(index):
        valid = index >= 0
        safe = tf.maximum(index, 0)
        image, mask = tf.numpy_function(gather, [safe], [tf.uint8, tf.uint8], stateful=False)
        image = tf.ensure_shape(tf.cast(image, tf.float32) / 255.0, (height, width, 3))
        mask = tf.ensure_shape(tf.cast(mask, tf.float32), (height, width, 1))
        if train and augment is not None:
            example_seed = tf.random.experimental.stateless_fold_in(base_seed, safe)
            image, mask = augment_example(image, mask, example_seed, augment)
        keep = tf.cast(valid, tf.float32)
        out = {"image": image * keep, "mask": mask * keep}
        if not train or not drop_remainder:
            out["valid"] = keep
        if not train:
            out["index"] = tf.cast(index, tf.int32)
            out["stem"] = tf.where(valid, tf.gather(stems, safe), "")
        return out

    options = tf.data.Options()
    options.deterministic = True
    dataset = (tf.data.Dataset.from_tensor_slices(indices)
               .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(local_batch_size, drop_remainder=True)
               .prefetch(prefetch)
               .with_options(options))
    return dataset


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
        dataset = make_dataset(data, global_batch_size=global_batch_size, train=True,
                               epoch=epoch, start_batch=start_batch,
                               drop_remainder=drop_remainder, **make_dataset_kwargs)
        for batch in dataset.as_numpy_iterator():
            yield step, batch
            step += 1
        epoch, start_batch = epoch + 1, 0


def to_global_batch(local_batch: dict, mesh: jax.sharding.Mesh, data_axis: str = "data"
                    ) -> dict[str, jax.Array]:
    """Assembles each process's local batch into global arrays sharded on the batch dimension.

    Non-numeric entries (``stem``) are left out: keep them from the local batch.
    """
    sharding = NamedSharding(mesh, PartitionSpec(data_axis))
    out = {}
    for key, value in local_batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "biuf":
            out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out
