"""Runs what `hanet-export` wrote: `model.jax` (jax.export) or `model.onnx` (onnxruntime), with
the preprocessing, threshold and post-processing its `export.json` records.

`ExportedPredictor` has the interface of `predictor.Predictor` (uint8 images of any size in,
probabilities at each image's size out), so `predict.py --exported` and the benchmark use an
export exactly as they use a checkpoint. Neither runtime needs the model's Python code: the
serialized StableHLO is called with `jax.export.deserialize` alone, the ONNX graph with
onnxruntime alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable
import numpy as np

from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.inference.predictor import BatchedPredictor

MANIFEST_FILE = "export.json"
MANIFEST_VERSION = 1
RUNTIMES = {".jax": "jax", ".onnx": "onnxruntime"}


def read_manifest(directory: str | os.PathLike) -> dict:
    """`directory/export.json`; CheckpointError naming the file where it is missing or bad."""
    path = Path(directory) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
        manifest["image_size"], manifest["postprocessing"]["threshold"]  # noqa: B018 (required keys)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a hanet-export manifest ({type(e).__name__}: {e})") from e
    return manifest


def load_runner(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """`model.jax` or `model.onnx` as float32 (N, H, W, 3) -> probabilities (N, H, W, 1), run
    by jax alone or onnxruntime alone; CheckpointError naming the file where it cannot be."""
    path = Path(path)
    if path.suffix not in RUNTIMES:
        raise CheckpointError(f"{path}: an export is model.jax or model.onnx (suffixes {', '.join(RUNTIMES)})")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    return _jax_runner(path) if RUNTIMES[path.suffix] == "jax" else _onnx_runner(path)


def _jax_runner(path: Path):
    import jax

    try:
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception as e:  # noqa: BLE001  (any deserialization failure: name the file)
        raise CheckpointError(f"{path}: not a serialized jax.export artifact ({e})") from e
    if jax.default_backend() not in exported.platforms:
        raise CheckpointError(f"{path} was lowered for {', '.join(exported.platforms)}, not for this "
                              f"host's {jax.default_backend()}: export it with --platforms including it")
    call = jax.jit(exported.call)
    return lambda x: np.asarray(call(x))


def _onnx_runner(path: Path):
    try:
        import onnxruntime
    except ImportError as e:
        raise CheckpointError(f"{path}: running ONNX needs onnxruntime (pip install 'hanet-jax[onnx]')") from e
    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: jax2onnx's shape hints make it warn per node
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({e})") from e
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


class ExportedPredictor(BatchedPredictor):
    """Batched probabilities from an exported `model.jax` or `model.onnx`, with the threshold
    and post-processing its export.json records."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 8):
        self.path = Path(path)
        self.runtime = RUNTIMES.get(self.path.suffix)
        self._call = load_runner(self.path)
        self.manifest = read_manifest(self.path.parent)
        self.batch_size = batch_size

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.manifest["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["postprocessing"]["threshold"])

    @property
    def postprocess(self) -> str:
        return self.manifest["postprocessing"]["postprocess"]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._call(np.ascontiguousarray(batch, np.float32))[..., 0]
