"""The run's metric writer: clu's TensorBoard writer, with a local mirror for a bucket workdir.

A local workdir gets clu's default writer as it is. For a workdir in a bucket (`gs://...`) the
events go to a local mirror folder first, named in the log, and every flush copies its files to
WORKDIR through `hanet_jax.storage` (the path type Orbax and every other file of the run use):
TensorFlow's summary writer speaks `gs://` only through its own GCS client, which is not the one
the rest of the run uses (it has no emulator endpoint, and it may be absent). The trainer flushes
at every epoch's end, so the bucket lags the run by at most one epoch; closing the writer copies
the rest and deletes the mirror, so nothing of the run stays on the local disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from absl import logging
from clu import metric_writers

from hanet_jax import storage


def create_writer(workdir: str | os.PathLike, *, just_logging: bool = False):
    """The writer of a run whose workdir is `workdir` (process 0 writes; others only log)."""
    if just_logging or not storage.is_remote(workdir):
        return metric_writers.create_default_writer(
            None if just_logging else os.fspath(workdir), just_logging=just_logging)
    return MirroredWriter(workdir)


class MirroredWriter(metric_writers.MetricWriter):
    """clu's default writer on a local mirror, copied to a bucket workdir at every flush."""

    def __init__(self, workdir: str | os.PathLike):
        self.target = storage.path(workdir)
        self.mirror = tempfile.mkdtemp(prefix="hanet-tensorboard-")
        logging.info("TensorBoard events of %s are written to the local mirror %s and copied "
                     "there at every epoch's end", self.target, self.mirror)
        self.inner = metric_writers.create_default_writer(self.mirror)

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
        for folder, _, files in os.walk(self.mirror):
            for name in files:
                source = os.path.join(folder, name)
                target = self.target / os.path.relpath(source, self.mirror)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as f:
                    target.write_bytes(f.read())
