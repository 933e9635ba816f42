"""A CRC-32 of every array a checkpoint holds, computed at save and checked after restore.

Why: Orbax's files carry no checksum of the array data. A flipped bit inside a zstd-compressed
chunk often still decompresses, into wrong weights, and nothing would notice; a truncated or
garbled file fails loudly anyway. Each array's entry is {"dtype", "shape", "crc32"} under its
path in the tree ("params/dec1/conv/kernel", "opt_state/0/mu/params/..."), so a mismatch names
the array. Hashing is zlib's CRC-32 of the host bytes (about 4 GB/s: negligible next to a save).

Arrays this process cannot see whole (sharded over several processes and not replicated) get no
entry and are not checked; HA-Net's training state is replicated, so every array has one.
A checkpoint written before checksums existed has none, and restores unchecked.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

import jax
import numpy as np

ALGORITHM = "crc32"


def _key_name(key) -> str:
    """One path element as plain text: a dict key, a sequence index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_path(path) -> str:
    return "/".join(_key_name(k) for k in path)


def host_array(x) -> np.ndarray | None:
    """`x` as one numpy array on this host, or None when no process holds all of it."""
    if isinstance(x, jax.Array):
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return None
    return np.asarray(x)


def array_checksum(array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return {"dtype": array.dtype.name, "shape": list(array.shape),
            "crc32": f"{zlib.crc32(data):08x}"}


def tree_checksums(tree) -> dict[str, dict]:
    """{path: {"dtype", "shape", "crc32"}} of every leaf of `tree` this process can see whole."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = host_array(leaf)
        if array is not None:
            out[leaf_path(path)] = array_checksum(array)
    return out


def first_mismatch(tree, saved: Mapping[str, Any]) -> str | None:
    """A description of the first array of `tree` that differs from its `saved` entry, or None.

    Arrays without an entry (see the module docstring) are not checked."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = leaf_path(path)
        expected = saved.get(name)
        if expected is None:
            continue
        array = host_array(leaf)
        if array is None:
            continue
        got = array_checksum(array)
        if got != dict(expected):
            what = ", ".join(f"{k} {expected.get(k)} saved, {got[k]} read" for k in got
                             if got[k] != expected.get(k))
            return f"array {name} does not match its checksum ({what})"
    return None
