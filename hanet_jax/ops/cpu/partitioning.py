"""A handler's FFI call as a jax function that runs per device shard under a batch-sharded jit.

XLA cannot partition a custom call by itself; `custom_partitioning` tells it that each device
runs the handler on its own slice of the batch (and, for weight gradients, that a psum adds the
partial sums, as XLA does for its own conv gradient).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec


def _batch_axis(arg):
    spec = arg.sharding.spec
    return spec[0] if len(spec) else None


def sharded_over_batch(target: str, out_shape, rule: str, summed: bool = True,
                        second_sharded: bool = True, attrs=dict):
    """The handler `target` as a jax function of its operands, batch first; the others are
    replicated instead where not `second_sharded` (e.g. a kernel). Its result has
    shape `out_shape(*operands)` and attributes `attrs()` (read at trace time). Under a
    batch-sharded jit each device runs it on its shard: `summed` results (weight gradients) are
    partial sums that a psum adds, as XLA does for its own conv gradient; the others stay
    sharded over the batch."""

    def local(*args):
        out = jax.ShapeDtypeStruct(out_shape(*args), np.float32)
        return jax.ffi.ffi_call(target, out)(*args, **attrs())

    def result(mesh, axis):
        return NamedSharding(mesh, PartitionSpec() if summed else PartitionSpec(axis))

    def infer(mesh, arg_shapes, result_shape):
        return result(mesh, _batch_axis(arg_shapes[0]))

    def partition(mesh, arg_shapes, result_shape):
        axis = _batch_axis(arg_shapes[0])
        batch = NamedSharding(mesh, PartitionSpec(axis))
        second = batch if second_sharded else NamedSharding(mesh, PartitionSpec())

        def lower(*args):  # one device's shard
            out = local(*args)
            return jax.lax.psum(out, axis) if summed and axis is not None else out

        return mesh, lower, result(mesh, axis), (batch,) + (second,) * (len(arg_shapes) - 1)

    fn = custom_partitioning(lambda *args: local(*args))
    fn.def_partition(infer_sharding_from_operands=infer, partition=partition, sharding_rule=rule)
    return fn, local
