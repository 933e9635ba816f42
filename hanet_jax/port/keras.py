"""Keras checkpoints -> Flax variables.

HA-Net files (`model.save_weights("x.weights.h5")` of the released notebook) name their groups
by class name and layer order (`layers/conv2d_120/vars/0`), not by DenseNet's layer names. So
the port rebuilds the release with our Keras rebuild (`hanet_jax.reference`), checks the file
against the layout that model writes (every array present and of the right shape), loads it,
and then reads the live layers by name. The name table is `keras_object_for`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.models.hanet import HANet
from hanet_jax.port.weight_files import PortError, expected_layout, h5_arrays, layout_problems, summarise


# --------------------------------------------------------------------------- name table

# Flax module path prefixes that have no Keras layer of their own.
_TRANSPARENT = ("encoder", "tam")
# Keras layers whose Flax counterparts are nested attributes (GSA's projections, PE's tables).
_COMPOSITE = ("gsa", "position_encoding")
_RENAMED = {"head_out_conv": "output_conv"}


def keras_layer_name(module_path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Flax module path -> (Keras layer name, attribute path inside that layer).

    encoder/conv2_block1_1_conv -> conv2_block1_1_conv (DenseNet's own names);
    tam/gsa/proj_query -> gsa . proj_query; dec2/sfeb/ctx_bn -> dec2_sfeb_ctx_bn;
    head/out_conv -> output_conv; everything else joins the path with "_".
    """
    parts = tuple(p for p in module_path if p not in _TRANSPARENT)
    if parts and parts[0] in _COMPOSITE:
        return parts[0], parts[1:]
    name = "_".join(parts)
    return _RENAMED.get(name, name), ()


def _keras_variable(model, collection: str, path: tuple[str, ...]):
    """The Keras variable behind one Flax leaf (`collection` is "params" or "batch_stats")."""
    import keras

    layer_name, attrs = keras_layer_name(path[:-1])
    obj = model.get_layer(layer_name)
    for attr in attrs:
        obj = getattr(obj, attr)
    leaf = path[-1]
    if isinstance(obj, keras.layers.BatchNormalization):
        attr = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}[leaf]
    else:
        attr = {"kernel": "kernel", "bias": "bias", "W": "W", "embedding": "embeddings"}[leaf]
    return getattr(obj, attr)


def _flax_leaves(model: HANet, image_size) -> dict:
    """{(collection, path): ShapeDtypeStruct} of the Flax model's variables, without computing them."""
    x = jnp.zeros((1, *image_size, 3))
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
    out = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
            out[(collection, tuple(k.key for k in path))] = leaf
    return out


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for (collection, path), value in flat.items():
        node = tree.setdefault(collection, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def keras_to_flax(keras_model, model: HANet, image_size) -> dict:
    """Read a live Keras HA-Net into `{"params", "batch_stats"}` for `model`."""
    flat = {}
    for key, spec in _flax_leaves(model, image_size).items():
        value = np.asarray(_keras_variable(keras_model, *key), np.float32)
        if value.shape != spec.shape:
            raise PortError(f"{'/'.join(key[1])}: Keras shape {value.shape} != Flax shape {spec.shape}")
        flat[key] = value
    return _nest(flat)


def flax_to_keras(variables: dict, keras_model, model: HANet, image_size) -> None:
    """Write Flax variables into a live Keras HA-Net (for exporting to the original's format)."""
    for (collection, path) in _flax_leaves(model, image_size):
        value = variables[collection]
        for key in path:
            value = value[key]
        _keras_variable(keras_model, collection, path).assign(np.asarray(value, np.float32))


def load_keras_hanet(weights: str | os.PathLike, variant: str = "full", image_size=(256, 256)) -> dict:
    """Port a Keras 3 `.weights.h5` of the released HA-Net to Flax `{"params", "batch_stats"}`."""
    from hanet_jax.reference.keras_original import build_keras_hanet

    weights = Path(weights)
    if not weights.is_file():
        raise PortError(f"weights file {weights} does not exist")
    image_size = tuple(int(s) for s in image_size)
    keras_model = build_keras_hanet(variant, (*image_size, 3))
    found = h5_arrays(weights)
    problems = layout_problems(expected_layout(keras_model), found)
    if problems:
        hint = ""
        w = found.get("layers/global_spatial_attention/vars/0")
        if w is not None and variant == "full" and w[0] != (image_size[0] // 32) * (image_size[1] // 32):
            hint = (f"\nThe file's GSA matrix is {tuple(w)}: it was trained at another input size "
                    f"(pass --image_size H W with (H/32)*(W/32) = {w[0]}).")
        raise PortError(f"{weights} does not fit HA-Net variant {variant!r} at {image_size}:\n"
                        f"{summarise(problems)}{hint}")
    keras_model.load_weights(weights)
    return keras_to_flax(keras_model, HANet(variant=variant), image_size)

