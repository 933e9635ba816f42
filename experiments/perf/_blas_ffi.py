"""Round 7's FFI forms for the A/B scripts: the weight gradient is the model's own
(`hanet_jax/ops/cpu/conv.py`); the forward as nine accumulated GEMMs
(`ffi/blas_conv3x3_forward.cc`, appended to the model's C++ source and built the same way)
measured slower than XLA's and is only here. Both are partitioned per device.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import jax
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu.build import load_handlers
from hanet_jax.ops.cpu.partitioning import _batch_axis

weight_grad = cpu_conv.weight_grad
_FORWARD = "hanet_perf_conv3x3_forward"


def _load():
    text = (cpu_conv._SOURCE.read_text()
            + (Path(__file__).parent / "ffi" / "blas_conv3x3_forward.cc").read_text())
    src = Path(tempfile.gettempdir()) / f"hanet_perf_{hashlib.sha256(text.encode()).hexdigest()[:12]}.cc"
    src.write_text(text)
    load_handlers(src, {_FORWARD: "Forward"})
    assert cpu_conv.available(), "the model's weight-gradient handler did not load"


_load()


def _forward_local(x, k):
    out = jax.ShapeDtypeStruct(x.shape[:3] + k.shape[-1:], np.float32)
    return jax.ffi.ffi_call(_FORWARD, out)(x, k)


@custom_partitioning
def forward(x, k):
    return _forward_local(x, k)


def _batch(mesh, arg_shapes):
    return NamedSharding(mesh, PartitionSpec(_batch_axis(arg_shapes[0])))


def _forward_partition(mesh, arg_shapes, result_shape):
    batch = _batch(mesh, arg_shapes)
    return mesh, _forward_local, batch, (batch, NamedSharding(mesh, PartitionSpec()))


forward.def_partition(infer_sharding_from_operands=lambda mesh, a, r: _batch(mesh, a),
                      partition=_forward_partition, sharding_rule="b h w c, k l c f -> b h w f")
