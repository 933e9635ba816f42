"""`model.jax`: the serving function as a serialized `jax.export.Exported` (StableHLO).

Lowered for every platform asked (`cpu`, `cuda`, `tpu`) in one artifact, with a symbolic batch,
from a trace with the CPU handlers off (`ops.cpu.settings.disabled`): a multi-platform artifact
cannot carry their custom partitioning, and no GPU or TPU could run them. Another program runs
it with jax alone:

    exported = jax.export.deserialize(bytearray(open("model.jax", "rb").read()))
    probabilities = exported.call(images)      # (N, H, W, 3) float32 in [0, 1]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import jax

from hanet_jax.export.serving_function import ExportError, ServingFunction, converter_error
from hanet_jax.storage import write_bytes
from hanet_jax.ops.cpu import settings, targets

FILE = "model.jax"
PLATFORMS = ("cpu", "cuda", "tpu")


def custom_call_targets(stablehlo: str) -> list[str]:
    """The custom-call targets a StableHLO module's text calls."""
    return sorted(set(re.findall(r"stablehlo\.custom_call @([\w.\-]+)", stablehlo)))


def export(serving: ServingFunction, platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
    """The serving function exported for `platforms`, with a symbolic batch."""
    with settings.disabled():  # part of the jit key: a fresh, handler-free trace
        return jax.export.export(jax.jit(serving.fn), platforms=tuple(platforms))(serving.input_spec())


def write(serving: ServingFunction, out: Path, platforms: Sequence[str] = PLATFORMS) -> dict:
    """Writes OUT/model.jax; returns its manifest entry."""
    path = out / FILE
    try:
        exported = export(serving, platforms)
        blob = exported.serialize()
    except Exception as e:  # noqa: BLE001  (a converter's failure, in one line)
        raise converter_error("jax.export", str(path), e) from e
    found = custom_call_targets(exported.mlir_module())
    leaked = sorted(set(found) & set(targets.CPU_ONLY))
    if leaked:  # the trace above is handler-free; this guards that promise
        raise ExportError(f"{path}: the CPU handlers {leaked} leaked into the exported graph")
    write_bytes(path, bytes(blob))
    return {"file": FILE, "platforms": list(exported.platforms), "custom_call_targets": found,
            "calling_convention_version": exported.calling_convention_version}
