"""Augmentation on the device (hanet_jax.data.augment): what each part does, and keys that make an
augmented example the same in any batch, on any number of devices."""

import os
import subprocess
import sys

import data_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hanet_jax.data import augment, pipeline

ALL = augment.AugmentConfig.all_on()
FLIPS = augment.AugmentConfig(hflip=True, vflip=True)
SEED = 3


@pytest.fixture(scope="module")
def data():
    pairs = [fx.make_pair(i) for i in range(12)]
    return pipeline.from_arrays(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


def _host_batch(data, epoch=0):
    batch = next(pipeline.make_dataset(data, global_batch_size=len(data), seed=SEED, train=True,
                                       epoch=epoch, feeder="numpy"))
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _augmented(batch, config):
    out = jax.jit(lambda b: augment.device_batch(b, augment=config, seed=SEED))(batch)
    return np.asarray(out["image"]), np.asarray(out["mask"])


def test_without_augmentation_the_batch_is_the_cache_in_0_1(data):
    batch = _host_batch(data)
    for config in (None, augment.AugmentConfig(hflip=False)):
        image, mask = _augmented(batch, config)
        # XLA may divide by 255 as a multiply by 1/255: one rounding step apart at most
        np.testing.assert_allclose(image, np.asarray(batch["image"]) / np.float32(255),
                                   rtol=2e-7, atol=0)
        assert image.dtype == np.float32 and mask.dtype == np.float32
        np.testing.assert_array_equal(mask, np.asarray(batch["mask"]))


def test_flips_move_image_and_mask_together(data):
    batch = _host_batch(data)
    image, mask = _augmented(batch, FLIPS)
    plain, _ = _augmented(batch, None)
    outcomes = []
    for i in range(len(image)):  # a flip is exact: one of the four flips of the source
        candidates = [plain[i], plain[i, :, ::-1], plain[i, ::-1], plain[i, ::-1, ::-1]]
        outcomes += [k for k, c in enumerate(candidates) if np.array_equal(image[i], c)][:1]
    assert len(outcomes) == len(image) and len(set(outcomes)) >= 3  # drawn per example
    lesion = image[..., :1] > fx.LESION_LEVEL / 255  # the fixture's lesion is its bright pixels
    np.testing.assert_array_equal(lesion, mask > 0)


def test_affine_warps_image_and_mask_alike(data):
    batch = _host_batch(data)
    image, mask = _augmented(batch, augment.AugmentConfig(hflip=False, affine=True))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert not np.array_equal(mask, np.asarray(batch["mask"]))
    agree = (image[..., :1] > fx.LESION_LEVEL / 255) == (mask > 0)
    assert agree.mean() > 0.97  # bilinear vs nearest differ only along the lesion edge


def test_intensity_augmentation_leaves_masks(data):
    batch = _host_batch(data)
    plain_image, plain_mask = _augmented(batch, None)
    image, mask = _augmented(batch, augment.AugmentConfig(hflip=False, brightness_contrast=True,
                                                          speckle=True))
    np.testing.assert_array_equal(mask, plain_mask)
    assert not np.allclose(image, plain_image)
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_an_example_is_augmented_alike_in_any_batch_and_differently_each_epoch(data):
    batch = _host_batch(data)
    whole, _ = _augmented(batch, ALL)
    part = {k: v[3:7][::-1] for k, v in batch.items()}  # other neighbours, other order
    alone, _ = _augmented(part, ALL)
    np.testing.assert_array_equal(alone[::-1], whole[3:7])
    later, _ = _augmented({**batch, "epoch": batch["epoch"] + 1}, ALL)
    assert not np.array_equal(later, whole)


def test_augmentation_needs_the_index_and_epoch(data):
    batch = _host_batch(data)
    del batch["epoch"]
    with pytest.raises(KeyError, match="index' and 'epoch"):
        _augmented(batch, ALL)


_FOUR_DEVICES = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from hanet_jax.data import augment
batch = dict(np.load(sys.argv[1]))
mesh = Mesh(np.array(jax.devices()), ("data",))
sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
fn = jax.jit(lambda b: augment.device_batch(b, augment=augment.AugmentConfig.all_on(), seed=3))
out = fn(sharded)
assert len(out["image"].sharding.device_set) == 4
np.savez(sys.argv[2], image=np.asarray(out["image"]), mask=np.asarray(out["mask"]))
print("devices", jax.device_count())
"""


def test_augmented_batches_are_bit_identical_on_one_and_four_devices(data, tmp_path):
    assert jax.device_count() == 1
    batch = {k: np.asarray(v) for k, v in _host_batch(data, epoch=4).items()}
    np.savez(tmp_path / "batch.npz", **batch)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(tmp_path / "batch.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["devices", "4"]
    four = np.load(tmp_path / "out.npz")
    one_image, one_mask = _augmented({k: jnp.asarray(v) for k, v in batch.items()}, ALL)
    np.testing.assert_array_equal(four["image"], one_image)
    np.testing.assert_array_equal(four["mask"], one_mask)
