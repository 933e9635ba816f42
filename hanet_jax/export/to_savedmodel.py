"""`saved_model/`: the serving function as a TensorFlow SavedModel, for TF Serving and TF runtimes.

jax2tf with native serialization: the SavedModel holds the same StableHLO as `model.jax` (one
`XlaCallModule` op), lowered for the platforms asked, from a handler-free trace. Its
`serving_default` signature takes `image` (float32, (None, H, W, 3), [0, 1]) and returns
`probabilities` (float32, (None, H, W, 1)); the batch is symbolic.

    tf.saved_model.load("saved_model").signatures["serving_default"](image=x)["probabilities"]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hanet_jax.export.serving_function import ExportError, ServingFunction, converter_error
from hanet_jax.ops.cpu import settings

DIR = "saved_model"
INPUT, OUTPUT = "image", "probabilities"


def _tensorflow():
    try:
        from hanet_jax.tensorflow_cpu import tensorflow
        return tensorflow()
    except ImportError as e:
        raise ExportError(f"{DIR}: a SavedModel needs TensorFlow (pip install tensorflow-cpu)") from e


def write(serving: ServingFunction, out: Path, platforms: Sequence[str]) -> dict:
    """Writes OUT/saved_model/ (replacing it whole, never half); returns its manifest entry."""
    tf = _tensorflow()
    from jax.experimental import jax2tf

    path = out / DIR
    h, w = serving.image_size
    tmp = Path(tempfile.mkdtemp(prefix=f".{DIR}.", dir=out))
    try:
        with settings.disabled():  # part of the jit key: a fresh, handler-free trace
            converted = jax2tf.convert(serving.fn, polymorphic_shapes=[f"(b, {h}, {w}, 3)"],
                                       native_serialization_platforms=tuple(platforms), with_gradient=False)
            module = tf.Module()
            module.serve = tf.function(lambda image: {OUTPUT: converted(image)}, autograph=False,
                                       input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32, name=INPUT)])
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    except Exception as e:  # noqa: BLE001  (a converter's failure, in one line)
        shutil.rmtree(tmp, ignore_errors=True)
        raise converter_error("SavedModel (jax2tf)", str(path), e) from e
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return {"dir": DIR, "signature": "serving_default", "input": INPUT, "output": OUTPUT,
            "platforms": list(platforms)}


def load(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The SavedModel's `serving_default` as images -> probabilities."""
    tf = _tensorflow()
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda x: signature(**{INPUT: tf.constant(x)})[OUTPUT].numpy()
