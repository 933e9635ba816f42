"""Data parallelism: one mesh axis over every device of every process, and moving trees on and off it.

Steps are jitted with these shardings (train/steps.py): the state replicated, the batch split over
the `data` axis. Under jit a batch-sharded BatchNorm normalises over the global batch, so no pmap
and no per-device statistics are needed.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """One data-parallel axis over every device of every process."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Host values (the same on every process) -> global arrays replicated over the mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def to_host(tree):
    """Replicated global arrays -> numpy (works on every process)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                        else np.asarray(x), tree)
