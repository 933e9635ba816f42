"""The metric writer without TensorFlow: TensorBoard event files from the `tensorboard` package
alone (read back with TensorBoard's EventAccumulator), the log, and no import of TensorFlow or
clu.metric_writers; with TensorFlow, clu's writer as before."""

import io
import json
import sys

import numpy as np
import pytest

from _no_tensorflow import run_without_tensorflow
from hanet_jax import tensorflow_cpu
from hanet_jax.train import tensorboard

IMAGES = np.zeros((2, 8, 6, 3), np.uint8)
IMAGES[0, ..., 0] = 255
IMAGES[1, 2, 3] = (7, 8, 9)


def _accumulator(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
    acc.Reload()
    return acc


def _decoded_images(acc, tag):
    from PIL import Image

    (event,) = acc.Tensors(tag)
    strings = event.tensor_proto.string_val
    width, height = int(strings[0]), int(strings[1])
    return event.step, (height, width), np.stack(
        [np.asarray(Image.open(io.BytesIO(png))) for png in strings[2:]])


def _check_events(logdir):
    acc = _accumulator(logdir)
    loss, dice = acc.Scalars("train/loss"), acc.Scalars("epoch/val_dice")
    assert [(e.step, e.value) for e in loss] == [(3, 0.25), (5, 0.125)]
    assert [(e.step, pytest.approx(e.value)) for e in dice] == [(5, 0.75)]
    step, (height, width), images = _decoded_images(acc, "val/overlays")
    assert step == 5 and (height, width) == (8, 6)
    np.testing.assert_array_equal(images, IMAGES)
    assert acc.SummaryMetadata("val/overlays").plugin_data.plugin_name == "images"
    hparams = acc.SummaryMetadata("_hparams_/session_start_info")
    assert hparams.plugin_data.plugin_name == "hparams"
    return acc


WRITE = """
    import json, sys
    import numpy as np
    from absl import logging
    logging.set_verbosity(logging.INFO)
    import hanet_jax.train.tensorboard as tb
    imported = sorted(m for m in ("tensorflow", "clu.metric_writers") if m in sys.modules)
    writer = tb.create_writer(sys.argv[1])
    images = np.zeros((2, 8, 6, 3), np.uint8)
    images[0, ..., 0] = 255
    images[1, 2, 3] = (7, 8, 9)
    writer.write_hparams({"model.encoder_blocks": (1, 1, 1, 1), "learning_rate": 1e-3,
                          "data.root": None, "ema": True, "beta": np.float32(0.9)})
    writer.write_scalars(3, {"train/loss": 0.25})
    writer.write_scalars(5, {"train/loss": np.float32(0.125), "epoch/val_dice": np.float64(0.75)})
    writer.write_images(5, {"val/overlays": images})
    writer.write_texts(5, {"note": "text goes to the log"})
    writer.write_histograms(5, {"h": np.arange(10.0)})
    writer.flush()
    writer.close()
    logger = tb.create_writer(sys.argv[1], just_logging=True)
    logger.write_scalars(7, {"other/process": 1.5})
    logger.close()
    print(json.dumps({"imported_by_the_module": imported, "writer": type(writer).__name__,
                      "logger": type(logger).__name__,
                      "loaded": sorted(m for m in ("tensorflow", "clu.metric_writers")
                                       if m in sys.modules),
                      "tensorflow_available": __import__("hanet_jax.tensorflow_cpu").tensorflow_cpu
                          .tensorflow_available()}))
"""


def test_without_tensorflow_the_events_are_written_by_the_tensorboard_package(tmp_path):
    workdir = tmp_path / "run"
    code = WRITE.replace("sys.argv[1]", repr(str(workdir)))
    done = run_without_tensorflow(code, tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # importing the module, and writing, loaded neither TensorFlow nor clu.metric_writers
    assert report["imported_by_the_module"] == [] and report["loaded"] == []
    assert report["tensorflow_available"] is False
    assert report["writer"] == "MultiWriter" and report["logger"] == "LoggingWriter"
    # the scalars are in the log too, as clu's LoggingWriter writes them
    assert "[5] epoch/val_dice=0.75, train/loss=0.125" in done.stderr
    assert "[7] other/process=1.5" in done.stderr
    assert "[Hyperparameters]" in done.stderr
    events = list(workdir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    _check_events(workdir)


def test_the_blocker_blocks_tensorflow_only(tmp_path):
    done = run_without_tensorflow("""
        import importlib
        try:
            import tensorflow
        except ImportError as e:
            print("blocked:", e)
        import clu.metrics, tensorboard, jax  # noqa: F401  (the rest imports)
        try:
            import clu.metric_writers
        except ImportError:
            print("no clu.metric_writers")
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "blocked:" in done.stdout and "no clu.metric_writers" in done.stdout


def test_the_module_imports_neither_tensorflow_nor_clu_writers_even_where_tensorflow_exists():
    from _train_helpers import run_python

    done = run_python("""
        import sys
        import hanet_jax.train.tensorboard, hanet_jax.train.mfu, hanet_jax.train.profiling
        print(sorted(m for m in ("tensorflow", "clu.metric_writers") if m in sys.modules))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_event_file_writer_in_process_float_and_grayscale_images(tmp_path):
    writer = tensorboard.EventFileWriter(tmp_path)
    writer.write_scalars(1, {"a": 2})
    gray = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4, 1)  # HWC float in [0, 1]
    writer.write_images(1, {"gray": gray})
    writer.close()
    writer.close()  # twice is fine
    acc = _accumulator(tmp_path)
    assert [e.value for e in acc.Scalars("a")] == [2.0]
    step, shape, images = _decoded_images(acc, "gray")
    assert shape == (3, 4) and images.shape == (1, 3, 4)
    np.testing.assert_array_equal(images[0], np.rint(gray[..., 0] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="NHWC"):
        tensorboard.EventFileWriter(tmp_path / "x").write_images(0, {"bad": np.zeros((2, 3))})


def test_a_mirrored_writer_without_tensorflow_copies_its_events(tmp_path, monkeypatch):
    # The bucket path's wrapper around the TensorFlow-free writer: a local folder as the target.
    monkeypatch.setattr(tensorflow_cpu, "tensorflow_available", lambda: False)
    target = tmp_path / "target"
    writer = tensorboard.MirroredWriter(target)
    assert isinstance(writer.inner, tensorboard.MultiWriter)
    writer.write_hparams({"x": 1})
    writer.write_scalars(3, {"train/loss": 0.25})
    writer.flush()
    assert list(target.glob("events.out.tfevents.*"))  # copied at the flush
    writer.write_scalars(5, {"train/loss": 0.125, "epoch/val_dice": 0.75})
    writer.write_images(5, {"val/overlays": IMAGES})
    writer.close()
    assert not (tmp_path / writer.mirror).exists()
    _check_events(target)


def test_without_the_tensorboard_package_the_log_remains(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorflow_cpu, "tensorflow_available", lambda: False)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)  # import fails
    writer = tensorboard.create_writer(tmp_path)
    assert isinstance(writer, tensorboard.LoggingWriter)
    writer.write_scalars(1, {"a": 1.0})
    writer.write_images(1, {"i": IMAGES})
    writer.close()


def test_with_tensorflow_a_local_workdir_gets_clus_writer(tmp_path):
    if not tensorflow_cpu.tensorflow_available():
        pytest.skip("TensorFlow is not installed here")
    from clu import metric_writers

    writer = tensorboard.create_writer(tmp_path)
    assert isinstance(writer, metric_writers.MetricWriter)
    writer.write_scalars(1, {"a": 1.0})
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert isinstance(tensorboard.create_writer(tmp_path, just_logging=True),
                      tensorboard.LoggingWriter)
