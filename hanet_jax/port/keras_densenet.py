"""Keras DenseNet-121 ImageNet weights -> Flax `DenseNet121` variables -> an encoder checkpoint.

Two file formats are read by `load_densenet121(path)`:

* the legacy Keras 2 HDF5 file users download
  (`densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5`, or the with-top file, or a
  whole-model `.h5` whose weights sit under `model_weights/`). Its top-level groups are named by
  layer and list their arrays in a `weight_names` attribute. Old files name layers
  `conv1/conv` and `conv1/bn` where Keras 3 says `conv1_conv` and `conv1_bn`. Both spellings are
  accepted, because "/" is read as "_". Arrays are identified by the last part of their weight
  name (`kernel`, `gamma`, `beta`, `moving_mean`, `moving_variance`, with or without `:0`).
  Layers that DenseNet-121's encoder does not have, such as the classifier `fc1000` or
  `predictions`, are ignored.
* a Keras 3 `.weights.h5` of `keras.applications.DenseNet121`. Its paths are ordered by class
  name (`layers/conv2d_5/vars/0`) and do not carry DenseNet's layer names. So the model is rebuilt
  with or without its top, as the file says, the file is checked against the layout that
  model writes, `load_weights` is called, and the live layers are read by name.

The Flax module names are Keras' layer names, so the mapping is the identity on names:
BN gamma/beta -> params scale/bias, moving mean/variance -> batch_stats mean/var, and
conv kernel -> params kernel. The kernel layout (kh, kw, in, out) is already Flax's.

An *encoder checkpoint* (see `save_encoder_checkpoint`) is a directory like the one
`checkpoints.save_variables` writes, with its meta kind set to "encoder". `DIR/variables` holds
the tree `{"params": {"encoder": ...}, "batch_stats": {"encoder": ...}}`. `DIR/hanet.json` holds
`model = {"encoder_epsilon", "input_normalization": "imagenet"}`, with `image_size` set to
[0, 0] because the encoder works at any size that is a multiple of 32. The trees drop into a
`HANet`'s params and batch_stats under "encoder".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.checkpoints.format import read_meta, save_variables, write_meta
from hanet_jax.checkpoints.loading import load_variables
from hanet_jax.models.densenet import DENSENET_EPS, DenseNet121
from hanet_jax.port.weight_files import PortError, expected_layout, h5_arrays, layout_problems, summarise

ENCODER_KIND = "encoder"
ENCODER_SCOPE = "encoder"  # the HANet submodule the trees belong under

# Keras weight name (last part) -> (Flax collection, Flax leaf).
KERAS_ROLES = {
    "kernel": ("params", "kernel"),
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}
_FLAX_TO_KERAS_ROLE = {v: k for k, v in KERAS_ROLES.items()}


# --------------------------------------------------------------------------- Flax side

def densenet_leaves() -> dict[tuple[str, str, str], tuple[int, ...]]:
    """{(collection, layer name, leaf): shape} for every variable of Flax `DenseNet121`."""
    shapes = jax.eval_shape(lambda: DenseNet121().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    out = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
            layer, name = (k.key for k in path)
            out[(collection, layer, name)] = tuple(leaf.shape)
    return out


def nest_leaves(flat: Mapping[tuple[str, str, str], np.ndarray]) -> dict:
    """{(collection, layer, leaf): array} -> {"params": {layer: {leaf: array}}, "batch_stats": ...}."""
    tree: dict = {"params": {}, "batch_stats": {}}
    for (collection, layer, name), value in flat.items():
        tree[collection].setdefault(layer, {})[name] = np.asarray(value, np.float32)
    return tree


def _keras_array_name(key: tuple[str, str, str]) -> str:
    collection, layer, leaf = key
    return f"{layer}/{_FLAX_TO_KERAS_ROLE[(collection, leaf)]}"


def check_arrays(source: str, found: Mapping, describe=_keras_array_name) -> dict:
    """Check `found` {(collection, layer, leaf): array} against `DenseNet121`. Return it nested.

    Raise `PortError` naming `source` and every missing or misshaped array (`describe` turns a
    key into the source's own name for it, Keras' `conv1_bn/gamma` by default).
    """
    expected = densenet_leaves()
    problems = layout_problems(
        {describe(k): s for k, s in expected.items()},
        {describe(k): tuple(np.shape(v)) for k, v in found.items() if k in expected},
    )
    if problems:
        raise PortError(f"{source} does not fit DenseNet-121:\n{summarise(problems)}")
    return nest_leaves({k: found[k] for k in expected})


# --------------------------------------------------------------------------- legacy Keras 2 HDF5

def _h5_list_attr(group, name: str) -> list[str] | None:
    """A string-list attribute, including Keras' chunked form (`name0`, `name1`, ...)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _keras_name(name: str) -> str:
    return name.replace("/", "_")  # Keras 2 `conv1/conv` == Keras 3 `conv1_conv`


def _role(weight_name: str) -> str:
    return weight_name.split("/")[-1].split(":")[0]


def _legacy_arrays(path: Path, f) -> dict:
    """{(collection, layer, leaf): array} from a legacy HDF5 weights file."""
    root = f["model_weights"] if "model_weights" in f else f
    layer_names = _h5_list_attr(root, "layer_names")
    if layer_names is None:
        layer_names = [k for k in root.keys() if hasattr(root[k], "attrs")]
    wanted = {layer for _, layer, _ in densenet_leaves()}
    found = {}
    for layer in layer_names:
        name = _keras_name(layer)
        if name not in wanted or layer not in root:
            continue  # classifier (`fc1000`, `predictions`), input, activations, ...
        group = root[layer]
        for weight in _h5_list_attr(group, "weight_names") or []:
            role = _role(weight)
            if role not in KERAS_ROLES:
                raise PortError(f"{path}: layer {layer} has an array {weight!r} that DenseNet-121 does not have")
            collection, leaf = KERAS_ROLES[role]
            found[(collection, name, leaf)] = np.asarray(group[weight])
    if not found:
        raise PortError(
            f"{path}: no DenseNet-121 layer found (expected groups like conv1_conv or conv1/conv; "
            f"the file has {sorted(root.keys())[:10]})")
    return found


# --------------------------------------------------------------------------- Keras 3 .weights.h5

def _keras3_arrays(path: Path) -> dict:
    """Rebuild `keras.applications.DenseNet121`, check the layout, load, read live layers by name."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    found_layout = h5_arrays(path)
    dense = [k for k in found_layout if k.startswith("layers/dense/")]
    if dense:  # with-top file: the classifier's width comes from its kernel
        classes = next(s[-1] for k, s in found_layout.items() if k.startswith("layers/dense/") and len(s) == 2)
        model = keras.applications.DenseNet121(include_top=True, weights=None, classes=int(classes),
                                               classifier_activation=None)
    else:
        model = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(None, None, 3))
    problems = layout_problems(expected_layout(model), found_layout)
    if problems:
        raise PortError(f"{path} is not a Keras 3 DenseNet-121 weights file:\n{summarise(problems)}")
    model.load_weights(path)
    found = {}
    for collection, layer, leaf in densenet_leaves():
        var = getattr(model.get_layer(layer), _FLAX_TO_KERAS_ROLE[(collection, leaf)])
        found[(collection, layer, leaf)] = np.asarray(var)
    return found


# --------------------------------------------------------------------------- entry points

def load_densenet121(path: str | os.PathLike) -> dict:
    """Port Keras DenseNet-121 weights to `{"params", "batch_stats"}` for `models.DenseNet121`.

    `path` is either a legacy Keras 2 HDF5 file (ImageNet download, with or without top) or a
    Keras 3 `.weights.h5`. The format is detected from the file. Raises `PortError` naming the
    file and the arrays that are missing or misshaped.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise PortError(f"weights file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            keras3 = "layers" in f and "layer_names" not in f.attrs and "model_weights" not in f
            found = None if keras3 else _legacy_arrays(path, f)
    except OSError as e:
        raise PortError(f"{path}: not a readable HDF5 weights file ({e})") from e
    if keras3:
        found = _keras3_arrays(path)
    return check_arrays(str(path), found)


def save_encoder_checkpoint(out: str | os.PathLike, variables: Mapping, *, epsilon: float = DENSENET_EPS,
                            source: Mapping | None = None) -> Path:
    """Write DenseNet variables as an encoder checkpoint (meta kind "encoder"; see module doc).

    `epsilon` is the BatchNorm eps the weights were trained with: 1.001e-5 for Keras weights,
    1e-5 for torchvision weights. It is stored as `model.encoder_epsilon`, the `HANet` field.
    """
    tree = {collection: {ENCODER_SCOPE: variables[collection]} for collection in ("params", "batch_stats")}
    cfg = {"encoder_epsilon": float(epsilon), "input_normalization": "imagenet"}
    extra = {"source": dict(source or {})}
    directory = save_variables(out, tree, model_cfg=cfg, image_size=[0, 0], **extra)
    write_meta(directory, kind=ENCODER_KIND, model_cfg=cfg, image_size=[0, 0], **extra)
    return directory


def load_encoder_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict]:
    """(variables `{"params": {"encoder": ...}, "batch_stats": {"encoder": ...}}`, meta) of an
    encoder checkpoint; raises `CheckpointError` when `directory` is not one."""
    meta = read_meta(directory)
    return load_variables(directory, meta=meta, kinds=(ENCODER_KIND,)), meta
