"""The one JSON writer: every report, summary, config and checkpoint description goes through it.

Written atomically (locally a temporary file renamed over the target, so a reader or a run
killed while writing never leaves half a file; in a bucket one object upload, which is atomic),
to any path `storage` takes, with parent folders created, NaN and infinities as null
(strict JSON that every reader accepts), numpy scalars and ConfigDicts as plain values.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from hanet_jax import storage


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: mappings (and ConfigDicts) as dicts, tuples as lists, numpy scalars as
    Python numbers, NaN and infinities as None."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: str | os.PathLike, payload: Any, *, indent: int | None = 2,
               sort_keys: bool = False) -> epath.Path:
    """Write `payload` to `path` as JSON (see the module docstring); returns the path."""
    text = json.dumps(to_jsonable(payload), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"
    return storage.write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path` (local or in a bucket); json and OS errors propagate."""
    return json.loads(storage.path(path).read_text())
