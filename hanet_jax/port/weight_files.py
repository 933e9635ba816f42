"""Weight files: the arrays a file holds, and what does not fit, named array by array.

Every port (Keras HA-Net, Keras and torchvision DenseNet-121) raises `PortError` with a message
that names the file and each missing, misshaped or unexpected array.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import h5py


class PortError(Exception):
    """A weights file that does not fit; the message names the file and the arrays."""



def h5_arrays(path: str | os.PathLike) -> dict[str, tuple]:
    """{dataset path: shape} of every array in an HDF5 file."""
    out = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise PortError(f"{path}: not a readable HDF5 weights file ({e})") from e
    return out


def layout_problems(expected: dict, found: dict) -> list[str]:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    problems = [f"missing array {k} (expected shape {tuple(expected[k])})" for k in missing]
    problems += [f"misshaped array {k}: file has {tuple(found[k])}, expected {tuple(expected[k])}" for k in misshaped]
    problems += [f"unexpected array {k} {tuple(found[k])}" for k in extra]
    return problems


def summarise(problems: Iterable[str], limit: int = 25) -> str:
    problems = list(problems)
    text = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"  {text}{more}"


def expected_layout(keras_model) -> dict[str, tuple]:
    """The arrays `keras_model.save_weights` writes: {path: shape}."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layout.weights.h5"
        keras_model.save_weights(path)
        return h5_arrays(path)
