"""`model.onnx`: the serving function as an ONNX graph, for onnxruntime and other ONNX runtimes.

Converted with jax2onnx from the handler-free trace's jaxpr. The `onnx` extra installs it
(`pip install 'hanet-jax[onnx]'`): jax2onnx 0.13.0 is the newest release that accepts our
orbax-checkpoint (0.14 to 0.17.1 require orbax-checkpoint < 0.11.37). jax2tf followed by tf2onnx
is no route: jax2tf emits a single XlaCallModule op, which tf2onnx cannot convert. The graph's
input is `image` (float32, (batch, H, W, 3), NHWC, [0, 1]) and its output `probabilities`
(float32, (batch, H, W, 1)); the batch is symbolic.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from hanet_jax.export.serving_function import ExportError, ServingFunction, converter_error
from hanet_jax.storage import write_bytes
from hanet_jax.ops.cpu import settings

FILE = "model.onnx"
OPSET = 23  # jax2onnx 0.13's default; onnxruntime 1.32 runs it
INPUT, OUTPUT = "image", "probabilities"


@contextlib.contextmanager
def _quiet_plugin_imports():
    # jax2onnx logs a traceback for each of its optional plugins (dm_pix, equinox...) that does
    # not import against this jax; none is needed here.
    logger = logging.getLogger("jax2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write(serving: ServingFunction, out: Path) -> dict:
    """Writes OUT/model.onnx; returns its manifest entry."""
    path = out / FILE
    try:
        with _quiet_plugin_imports():
            import jax2onnx
    except ImportError as e:
        raise ExportError(f"{path}: ONNX needs the onnx extra (pip install 'hanet-jax[onnx]')") from e
    h, w = serving.image_size
    try:
        with _quiet_plugin_imports(), settings.disabled():
            model = jax2onnx.to_onnx(serving.fn, [("batch", h, w, 3)], model_name="hanet", opset=OPSET,
                                     input_names=[INPUT], output_names=[OUTPUT])
        data = model.SerializeToString()
    except Exception as e:  # noqa: BLE001  (a converter's failure, in one line)
        raise converter_error("ONNX (jax2onnx)", str(path), e) from e
    write_bytes(path, data)
    return {"file": FILE, "opset": OPSET, "input": INPUT, "output": OUTPUT}
