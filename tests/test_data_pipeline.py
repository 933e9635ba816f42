"""The host feed: uint8 gathers, both feeders alike, determinism, process slices, resume, eval padding
(the augmentation, on the device, is tests/test_augment.py)."""

import os
import subprocess
import sys

import data_fixtures as fx
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from hanet_jax.data import layouts, pipeline

SIZE = (fx.HEIGHT, fx.WIDTH)
FEEDERS = ("tf.data", "numpy")


@pytest.fixture(scope="module")
def data():
    pairs = [fx.make_pair(i) for i in range(13)]
    return pipeline.from_arrays(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


def _batches(batches):
    return list(batches)


def _train(data, **kwargs):
    kwargs = {"global_batch_size": 4, "seed": 3, "train": True, **kwargs}
    return _batches(pipeline.make_dataset(data, **kwargs))


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype, key


@pytest.mark.parametrize("feeder", FEEDERS)
def test_training_batches_are_uint8_gathers_of_the_cache(data, feeder):
    batches = _train(data, feeder=feeder, epoch=2)
    assert len(batches) == 3  # 13 // 4: the partial batch is dropped in training
    batch = batches[0]
    assert set(batch) == {"image", "mask", "index", "epoch"}
    assert batch["image"].shape == (4,) + SIZE + (3,) and batch["image"].dtype == np.uint8
    assert batch["mask"].shape == (4,) + SIZE + (1,) and batch["mask"].dtype == np.uint8
    np.testing.assert_array_equal(batch["epoch"], [2] * 4)
    for b in batches:  # no augmentation on the host: each row is its cached example
        np.testing.assert_array_equal(b["image"], data.images[b["index"]])
        np.testing.assert_array_equal(b["mask"], data.masks[b["index"]])


def test_tf_data_and_numpy_feeders_give_identical_batches(data):
    for kwargs in ({"train": True, "epoch": 1, "start_batch": 1},
                   {"train": False, "process_index": 1, "process_count": 2}):
        tf_batches = _batches(pipeline.make_dataset(data, global_batch_size=4, seed=7,
                                                    feeder="tf.data", **kwargs))
        np_batches = _batches(pipeline.make_dataset(data, global_batch_size=4, seed=7,
                                                    feeder="numpy", **kwargs))
        assert tf_batches and len(tf_batches) == len(np_batches)
        _assert_same(tf_batches, np_batches)


def test_auto_feeder_follows_tensorflow():
    assert pipeline.feeder_name("auto") == "tf.data"  # installed in the test environment
    assert pipeline.feeder_name("numpy") == "numpy"
    with pytest.raises(ValueError, match="feeder"):
        pipeline.feeder_name("grain")


def test_numpy_feeder_stops_its_thread_when_the_consumer_stops(data):
    import threading
    batches = pipeline.make_dataset(data, global_batch_size=2, train=True, feeder="numpy")
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "hanet-feed" and t.is_alive()]


def test_same_seed_same_batches_other_epoch_other_order(data):
    _assert_same(_train(data), _train(data))
    assert not np.array_equal(_train(data)[0]["index"], _train(data, epoch=1)[0]["index"])


@pytest.mark.parametrize("feeder", FEEDERS)
def test_two_processes_give_the_same_global_batches(data, feeder):
    single = _train(data, process_index=0, process_count=1, feeder=feeder)
    halves = [_train(data, process_index=p, process_count=2, feeder=feeder) for p in range(2)]
    joined = [{k: np.concatenate([halves[0][b][k], halves[1][b][k]]) for k in single[b]}
              for b in range(len(single))]
    _assert_same(single, joined)


def test_resume_mid_epoch_matches_uninterrupted(data):
    kwargs = {"global_batch_size": 4, "seed": 5, "num_epochs": 3}
    full = list(pipeline.iterate_batches(data, **kwargs))
    assert [step for step, _ in full] == list(range(9))
    resumed = list(pipeline.iterate_batches(data, start_step=4, **kwargs))  # epoch 1, batch 1
    assert [step for step, _ in resumed] == list(range(4, 9))
    _assert_same([b for _, b in full[4:]], [b for _, b in resumed])


def test_eval_keeps_and_pads_the_last_batch(data):
    batches = _batches(pipeline.make_dataset(data, global_batch_size=4, train=False))
    assert len(batches) == 4
    last = batches[-1]
    np.testing.assert_array_equal(last["valid"], [1, 0, 0, 0])
    np.testing.assert_array_equal(last["index"], [12, -1, -1, -1])
    assert list(last["stem"]) == [b"12", b"", b"", b""]
    assert not last["image"][1:].any()
    stems = [s for b in batches for s, v in zip(b["stem"], b["valid"]) if v]
    assert stems == [str(i).encode() for i in range(13)]  # file order, no shuffle
    halves = [_batches(pipeline.make_dataset(data, global_batch_size=4, train=False,
                                             process_index=p, process_count=2)) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([halves[0][-1]["index"], halves[1][-1]["index"]]),
                                  last["index"])


def test_decode_examples_resizes_and_caches(tmp_path):
    pairs = fx.write_processed(str(tmp_path), n=5, image_ext=".jpg", mask_ext=".tif",
                               image_mode="RGB", mask_style="bool")
    examples = layouts.list_examples(str(tmp_path), "processed", "train")
    decoded = pipeline.decode_examples(examples, 24, num_workers=2)
    assert decoded.images.shape == (5, 24, 24, 3) and decoded.masks.shape == (5, 24, 24, 1)
    assert set(np.unique(decoded.masks)) == {0, 1}
    assert decoded.stems == ("1", "2", "3", "4", "5")
    full = pipeline.decode_examples(examples, SIZE)
    np.testing.assert_array_equal(full.masks[..., 0], np.stack([m for _, m in pairs.values()]))
    batch = _batches(pipeline.make_dataset(examples, image_size=24, global_batch_size=2,
                                           train=False))[0]
    np.testing.assert_array_equal(batch["image"], decoded.images[:2])


def test_decode_examples_names_the_bad_file(tmp_path):
    fx.write_processed(str(tmp_path), n=3)
    examples = layouts.list_examples(str(tmp_path), "processed", "train")
    fx.truncate(examples[1].image_path)
    with pytest.raises(layouts.DatasetError, match="2.png"):
        pipeline.decode_examples(examples, 16)


def test_to_global_batch_shards_the_batch_dimension(data):
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("data",))
    batch = _batches(pipeline.make_dataset(data, global_batch_size=len(devices) * 2,
                                           train=False))[0]
    arrays = pipeline.to_global_batch(batch, mesh)
    assert set(arrays) == {"image", "mask", "valid", "index"}  # stems stay on the host
    assert arrays["image"].shape == batch["image"].shape
    assert arrays["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(arrays["mask"]), batch["mask"])


_TWO_DEVICES = """
import jax, numpy as np
from jax.sharding import Mesh
from hanet_jax.data import pipeline
mesh = Mesh(np.array(jax.devices()), ("data",))
batch = {"image": np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2),
         "index": np.arange(4), "stem": np.array(list("abcd"))}
arrays = pipeline.to_global_batch(batch, mesh)
assert set(arrays) == {"image", "index"}, set(arrays)
for key, value in arrays.items():
    shards = sorted(value.addressable_shards, key=lambda s: s.index[0].start)
    assert [s.device for s in shards] == list(mesh.devices), shards
    for k, shard in enumerate(shards):  # each device holds its own half of the batch
        np.testing.assert_array_equal(np.asarray(shard.data), batch[key][2 * k:2 * k + 2])
print("ok", jax.device_count())
"""


def test_to_global_batch_splits_the_batch_over_two_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True,
                          env=env, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "2"]
