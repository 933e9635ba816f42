"""TensorFlow for the host only: tf.data, TFDS and the SavedModel export never take a GPU or TPU.

TensorFlow grabs every GPU's memory when it first creates its devices, which would starve the
JAX process that feeds from it. `tensorflow()` imports TensorFlow with its GPUs and TPUs hidden
from it, before any pipeline can create a device; every module of ours that uses TensorFlow
imports it through here. TensorFlow stays an import of those modules alone (the data pipeline,
the TFDS builders, the SavedModel export), so nothing else loads it.
"""

from __future__ import annotations

import functools
import logging


@functools.cache
def tensorflow():
    """The `tensorflow` module, with only the CPU visible to it (once per process)."""
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except RuntimeError as e:  # its devices already exist: someone imported TF before us
            logging.warning("TensorFlow's %s devices were initialised before hanet_jax could hide "
                            "them; it may hold accelerator memory (%s)", kind, e)
    return tf


@functools.cache
def tensorflow_available() -> bool:
    """Whether TensorFlow imports here (imported through `tensorflow()`, so with its
    accelerators hidden). Training, evaluation and prediction run without it."""
    try:
        tensorflow()
    except ImportError:
        return False
    return True
