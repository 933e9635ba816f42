"""The run's metric writer: TensorBoard event files and the log, with or without TensorFlow.

* Where TensorFlow imports (`tensorflow_cpu.tensorflow_available()`), a local workdir gets clu's
  default writer as before (the log, and TensorFlow's summary writer).
* Without TensorFlow, `clu.metric_writers` cannot be imported at all (its package imports the
  TensorFlow summary writer), so it is never imported: `EventFileWriter` writes TensorBoard's
  event files with the `tensorboard` package alone (its protos and record format; scalars as
  `simple_value`, images as PNG via Pillow in the image plugin's format, hyperparameters for the
  hparams plugin) and `LoggingWriter` logs what clu's LoggingWriter logs (so the epoch scalars
  are in the log). Without the `tensorboard` package too, the log alone.
* Processes other than the first (`just_logging=True`) only log, with either.
* For a workdir in a bucket (`gs://...`), `MirroredWriter` wraps either on a local mirror folder,
  named in the log, and every flush copies its files to WORKDIR through `hanet_jax.storage` (the
  path type Orbax and every other file of the run use): TensorFlow's summary writer speaks
  `gs://` only through its own GCS client, which is not the one the rest of the run uses (it has
  no emulator endpoint, and it may be absent). The trainer flushes at every epoch's end, so the
  bucket lags the run by at most one epoch; closing the writer copies the rest and deletes the
  mirror, so nothing of the run stays on the local disk.

Every writer has clu's MetricWriter methods (`write_scalars(step, dict)`, `write_images(step,
dict of uint8 NHWC)`, `write_hparams(dict)`, `write_texts`, `write_histograms`,
`write_summaries`, `write_videos`, `write_audios`, `flush()`, `close()`), duck-typed: none
subclasses clu's MetricWriter, which would import clu.metric_writers (and TensorFlow) here.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import time
from typing import Any, Mapping

import numpy as np
from absl import logging

from hanet_jax import storage, tensorflow_cpu


def create_writer(workdir: str | os.PathLike, *, just_logging: bool = False):
    """The writer of a run whose workdir is `workdir` (process 0 writes; others only log)."""
    if just_logging:
        return LoggingWriter()
    if storage.is_remote(workdir):
        return MirroredWriter(workdir)
    return local_writer(os.fspath(workdir))


def local_writer(logdir: str):
    """The log and TensorBoard events in the local folder `logdir`: clu's default writer where
    TensorFlow imports, else ours (`tensorboard` package only), else the log alone."""
    if tensorflow_cpu.tensorflow_available():
        try:
            from clu import metric_writers
        except ImportError as e:  # TensorFlow imports, clu's writer still does not
            logging.warning("clu.metric_writers does not import (%s): TensorBoard events are "
                            "written without it", e)
        else:
            return metric_writers.create_default_writer(logdir)
    try:
        events = EventFileWriter(logdir)
    except ImportError as e:
        logging.warning("neither TensorFlow nor the tensorboard package imports (%s): metrics "
                        "go to the log only, no TensorBoard events in %s", e, logdir)
        return LoggingWriter()
    logging.info("TensorFlow does not import: TensorBoard events are written to %s with the "
                 "tensorboard package alone", events.path)
    return MultiWriter([LoggingWriter(), events])


# ------------------------------------------------------------------------------- helpers

def _scalar(value) -> float:
    return float(np.asarray(value).item())


def _format(value) -> str:
    try:
        v = np.asarray(value)
    except Exception:  # noqa: BLE001 - a log line
        return str(value)
    if v.ndim == 0 and v.dtype.kind == "f":
        return f"{float(v):.6g}"
    return str(value) if v.ndim else str(v.item())


def _uint8_images(value) -> np.ndarray:
    """NHWC (or HWC) uint8; float images in [0, 1] are scaled as tf.summary.image does."""
    array = np.asarray(value)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be NHWC or HWC with 1, 3 or 4 channels, got shape "
                         f"{array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return array


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    if image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _hparam_value(value):
    """A value the hparams plugin takes (bool, number, str); others as their text."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ------------------------------------------------------------------------------- writers

class LoggingWriter:
    """Every value to the absl INFO log, as clu's LoggingWriter writes it."""

    def write_summaries(self, step: int, values: Mapping[str, Any], metadata=None):
        logging.info("[%d] Got raw tensors: %s.", step,
                     {k: np.shape(v) for k, v in values.items()})

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        logging.info("[%d] %s", step,
                     ", ".join(f"{k}={_format(v)}" for k, v in sorted(scalars.items())))

    def write_images(self, step: int, images: Mapping[str, Any]):
        logging.info("[%d] Got images: %s.", step, {k: np.shape(v) for k, v in images.items()})

    def write_videos(self, step: int, videos: Mapping[str, Any]):
        logging.info("[%d] Got videos: %s.", step, {k: np.shape(v) for k, v in videos.items()})

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
        logging.info("[%d] Got audios: %s.", step, {k: np.shape(v) for k, v in audios.items()})

    def write_texts(self, step: int, texts: Mapping[str, str]):
        logging.info("[%d] Got texts: %s.", step, texts)

    def write_histograms(self, step: int, arrays: Mapping[str, Any], num_buckets=None):
        logging.info("[%d] Got histograms: %s.", step, {k: np.shape(v) for k, v in arrays.items()})

    def write_hparams(self, hparams: Mapping[str, Any]):
        logging.info("[Hyperparameters] %s", dict(hparams))

    def flush(self):
        logging.flush()

    def close(self):
        self.flush()


class EventFileWriter:
    """TensorBoard event files without TensorFlow: the `tensorboard` package's protos and record
    format (length, masked CRC-32C, data, masked CRC-32C), written synchronously to a local file
    `LOGDIR/events.out.tfevents.<time>.<host>.<pid>`. Scalars, images and hyperparameters;
    the other kinds go to the log only."""

    def __init__(self, logdir: str | os.PathLike):
        # ImportError here when the tensorboard package is missing (create_writer falls back).
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        os.makedirs(logdir, exist_ok=True)
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                                         f"{socket.gethostname()}.{os.getpid()}.hanet")
        self._records = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self._log = LoggingWriter()

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def _summary(self, step: int, values: list) -> None:
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                          summary=self._summary_pb2.Summary(value=values)))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        value = self._summary_pb2.Summary.Value
        self._summary(step, [value(tag=k, simple_value=_scalar(v)) for k, v in scalars.items()])

    def write_images(self, step: int, images: Mapping[str, Any]):
        """Each entry as the image plugin's tensor (as tf.summary.image writes it): a string
        vector [width, height, PNG of each image], one tag per key, all the batch's images."""
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.image import metadata as image_metadata

        values = []
        for key, value in images.items():
            batch = _uint8_images(value)
            height, width = batch.shape[1:3]
            strings = [str(width).encode(), str(height).encode()] + [_png(im) for im in batch]
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, string_val=strings,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(strings))]))
            values.append(self._summary_pb2.Summary.Value(
                tag=key, tensor=tensor, metadata=image_metadata.create_summary_metadata(
                    display_name=key, description="")))
        self._summary(step, values)

    def write_hparams(self, hparams: Mapping[str, Any]):
        """The hparams plugin's session start (values that are not bool, number or str as their
        text; None as ""); where that fails, nothing but a warning."""
        try:
            from tensorboard.plugins.hparams import summary_v2

            summary = summary_v2.hparams_pb({str(k): _hparam_value(v) for k, v in hparams.items()})
        except Exception as e:  # noqa: BLE001 - hparams are a convenience, never fatal
            logging.warning("hyperparameters not written for TensorBoard's hparams tab: %s", e)
            return
        self._write(self._event_pb2.Event(wall_time=time.time(), step=0, summary=summary))

    def write_summaries(self, step, values, metadata=None):
        self._log.write_summaries(step, values, metadata)

    def write_videos(self, step, videos):
        self._log.write_videos(step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._log.write_audios(step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._log.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._log.write_histograms(step, arrays, num_buckets)

    def flush(self):
        if not self._records.closed:
            self._records.flush()

    def close(self):
        if not self._records.closed:
            self._records.flush()
            self._records.close()


class MultiWriter:
    """Every call to each of `writers`, in order."""

    def __init__(self, writers):
        self.writers = list(writers)

    def write_summaries(self, step, values, metadata=None):
        for w in self.writers:
            w.write_summaries(step, values, metadata)

    def write_scalars(self, step, scalars):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def write_images(self, step, images):
        for w in self.writers:
            w.write_images(step, images)

    def write_videos(self, step, videos):
        for w in self.writers:
            w.write_videos(step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        for w in self.writers:
            w.write_audios(step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        for w in self.writers:
            w.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        for w in self.writers:
            w.write_histograms(step, arrays, num_buckets)

    def write_hparams(self, hparams):
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


class MirroredWriter:
    """A local writer (`local_writer`) on a local mirror, copied to a bucket workdir at every
    flush."""

    def __init__(self, workdir: str | os.PathLike):
        self.target = storage.path(workdir)
        self.mirror = tempfile.mkdtemp(prefix="hanet-tensorboard-")
        logging.info("TensorBoard events of %s are written to the local mirror %s and copied "
                     "there at every epoch's end", self.target, self.mirror)
        self.inner = local_writer(self.mirror)

    def write_summaries(self, step, values, metadata=None):
        self.inner.write_summaries(step, values, metadata)

    def write_scalars(self, step, scalars):
        self.inner.write_scalars(step, scalars)

    def write_images(self, step, images):
        self.inner.write_images(step, images)

    def write_videos(self, step, videos):
        self.inner.write_videos(step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self.inner.write_audios(step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self.inner.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self.inner.write_histograms(step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self.inner.write_hparams(hparams)

    def flush(self):
        self.inner.flush()
        self._copy()

    def close(self):
        self.inner.close()
        self._copy()
        shutil.rmtree(self.mirror, ignore_errors=True)

    def _copy(self):
        storage.copy_local_tree(self.mirror, self.target)
