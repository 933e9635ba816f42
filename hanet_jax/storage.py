"""Where a run's files live: a local folder or a bucket (`gs://...`), through one path type.

Every user path that names a workdir, a checkpoint, an ensemble, a data split file or an
evaluation output goes through `path()`, an `etils.epath.Path`: the type Orbax itself uses, so a
workdir and its checkpoints can never disagree about where they are. epath sends local paths to
the os, and `gs://` to `tf.io.gfile` where TensorFlow is installed and to gcsfs where it is not
(or where `EPATH_USE_TF=false`; `pip install '.[gcs]'`).

`os.path.abspath` and `pathlib.Path.absolute()` are never applied to a user's path: both turn
`gs://bucket/run` into `./gs:/bucket/run` on the local disk, where a TPU VM's checkpoints die with
it. Local paths are still made absolute here, because Orbax hands them to TensorStore's `file`
driver, which refuses a relative one.
"""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath

PathLike = str | os.PathLike


def is_remote(p: PathLike) -> bool:
    """True for a URI such as `gs://bucket/run` (anything with a scheme), False for a local path."""
    return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
    """`p` as an epath.Path: a URI as given, a local path made absolute (`~` expanded)."""
    if isinstance(p, epath.Path) and (is_remote(p) or p.is_absolute()):
        return p
    text = os.fspath(p)
    if is_remote(text):
        return epath.Path(text)
    local = epath.Path(os.path.expanduser(text))
    return local if local.is_absolute() else epath.Path(os.getcwd()) / local


def scratch_folder(prefix: str) -> str:
    """A new local temporary folder, removed when the process exits (data written out for the
    folder readers: a pack's or a TFDS dataset's originals)."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def text(p: PathLike) -> str:
    """`p` as the string a user gave or would type: `gs://bucket/run`, or an absolute local path."""
    return os.fspath(path(p))


def write_bytes(p: PathLike, data: bytes) -> epath.Path:
    """The one file writer: `data` to `p`, creating its folders, atomically (locally a temporary
    file renamed over the target, so a reader or a run killed while writing never sees half a
    file; in a bucket one object upload, which is atomic). Returns the path."""
    target = path(p)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(target):
        target.write_bytes(data)
        return target
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def write_png(p: PathLike, image) -> epath.Path:
    """A PIL image, or a uint8 array (H, W) or (H, W, 3), as a PNG file at `p`."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_bytes(p, buffer.getvalue())


def write_npy(p: PathLike, array: np.ndarray) -> epath.Path:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return write_bytes(p, buffer.getvalue())


def read_npy(p: PathLike) -> np.ndarray:
    return np.load(io.BytesIO(path(p).read_bytes()))


def copy_local_tree(folder: str | os.PathLike, target: PathLike) -> None:
    """Every file under the local `folder` to the same relative path under `target` (a bucket
    folder, say): how a run's locally written TensorBoard events and profiler traces reach a
    `gs://` workdir."""
    target = path(target)
    for parent, _, files in os.walk(folder):
        for name in files:
            source = os.path.join(parent, name)
            with open(source, "rb") as f:
                write_bytes(target / os.path.relpath(source, folder), f.read())
