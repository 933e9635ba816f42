"""`export.json`: what another runtime needs to use an export exactly as `predict.py` does.

Input and output (names, dtypes, layout, value range), the model size, the preprocessing
`predict.py` applies before the model and the post-processing after it (with the threshold the
checkpoint chose on its validation data, where an eval.py JSON records one), the checkpoint it
came from, the platforms, each format's check against the Flax model, and the versions of jax
and of each converter. `hanet_jax.inference.exported` reads it back.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from hanet_jax import storage
from hanet_jax.export.serving_function import ServingFunction
from hanet_jax.inference.exported import MANIFEST_FILE, MANIFEST_VERSION
from hanet_jax.json_files import write_json

# Each format's converter, whose version the manifest records.
CONVERTERS = {"jax": ("jax", "jaxlib"), "savedmodel": ("tensorflow-cpu", "tensorflow"),
              "onnx": ("jax2onnx", "onnx", "onnxruntime")}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(formats) -> dict:
    names = ["hanet-jax", "jax", "jaxlib", "flax", "numpy"]
    for fmt in formats:
        names += [n for n in CONVERTERS.get(fmt, ()) if n not in names]
    return {n: v for n in names if (v := _version(n)) is not None}


def preprocessing(image_size) -> dict:
    h, w = image_size
    return {
        "read": "decode to uint8 RGB (H, W, 3): a grey image replicated to 3 channels, alpha dropped, "
                "16-bit scaled to 8 (hanet_jax.data.layouts.read_image)",
        "resize": {"to": [h, w], "method": "bilinear on the uint8 image, PIL Image.BILINEAR "
                                              "(antialiased when shrinking)"},
        "scale": "float32(uint8) / 255, giving [0, 1]",
        "normalisation": "none outside the model: any ImageNet normalisation is inside the graph",
        "batch": "stack to (N, H, W, 3) float32, NHWC",
    }


def postprocessing(threshold: float, postprocess: str, source: str) -> dict:
    return {
        "resize_back": "bilinear resize of each probability map (float, PIL mode 'F') to its image's own size",
        "threshold": float(threshold), "rule": "mask = probability >= threshold (in float32)",
        "postprocess": postprocess,
        "postprocess_meaning": {"none": "the thresholded mask",
                                "largest_component": "keep the largest 8-connected component",
                                "most_probable_component": "keep the 8-connected component with the "
                                                           "most probability mass"}[postprocess],
        "source": source,
    }


def write(out: Path, serving: ServingFunction, *, checkpoint: str | os.PathLike, formats: dict,
          platforms, post: dict, checks: dict) -> Path:
    h, w = serving.image_size
    meta = serving.bundles[0].meta
    return write_json(out / MANIFEST_FILE, {
        "format_version": MANIFEST_VERSION,
        "formats": formats,
        "input": {"name": "image", "dtype": "float32", "shape": [None, h, w, 3], "layout": "NHWC",
                  "range": [0.0, 1.0]},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, h, w, 1], "layout": "NHWC",
                   "range": [0.0, 1.0], "meaning": "per-pixel lesion probability (sigmoid of the logits)"
                   + (", averaged over the ensemble's members" if len(serving.members) > 1 else "")
                   + (", averaged with the horizontally flipped prediction (TTA)" if serving.tta else "")},
        "image_size": [h, w],
        "preprocessing": preprocessing(serving.image_size),
        "postprocessing": post,
        "checkpoint": {"path": storage.text(checkpoint),
                       "kind": "ensemble" if len(serving.members) > 1 else meta.get("kind"),
                       "members": [storage.text(m) for m in serving.members],
                       "trained_image_size": list(serving.bundles[0].image_size),
                       "model": meta.get("model")},
        "tta": serving.tta,
        "platforms": list(platforms),
        "checks": checks,
        "versions": versions(formats),
    })
