"""torchvision DenseNet-121 weights (`densenet121-XXXX.pth`) -> Flax `DenseNet121` variables.

Key table (torchvision -> Keras/Flax layer name):

    features.conv0                            conv1_conv
    features.norm0                            conv1_bn
    features.denseblock{b}.denselayer{i}.norm1   conv{b+1}_block{i}_0_bn
    features.denseblock{b}.denselayer{i}.conv1   conv{b+1}_block{i}_1_conv
    features.denseblock{b}.denselayer{i}.norm2   conv{b+1}_block{i}_1_bn
    features.denseblock{b}.denselayer{i}.conv2   conv{b+1}_block{i}_2_conv
    features.transition{b}.norm / .conv       pool{b+1}_bn / pool{b+1}_conv
    features.norm5                            bn

Old checkpoints spell the dense-layer modules `norm.1`, `conv.1`, `norm.2` and `conv.2`. They
are renamed the way torchvision's own loader renames them. `classifier.*` and
`num_batches_tracked` are ignored, and a `module.` prefix (from DataParallel) is stripped.
BN weight/bias -> scale/bias, running_mean/var -> batch_stats mean/var. Conv weights are
OIHW and become HWIO.

Equivalence of the architectures. torchvision's stem is a conv 7x7/2 with padding 3 followed by
a max-pool 3/2 with padding 1. Keras uses ZeroPadding2D(3) + a valid conv, then
ZeroPadding2D(1) + a valid max-pool. The convs are identical, since both pad 3 zeros on every
side. The pools are identical too: torch pads the max-pool with -inf and Keras with 0, but the
pool follows a ReLU, so every value is >= 0 and each window holds at least one real pixel. The
rest is the same sequence of operations: BN -> ReLU -> conv, concatenation, 2x2 average pooling,
`norm5` -> ReLU (torchvision applies `F.relu` in `forward`).

BatchNorm eps: torchvision's is 1e-5, Keras' DenseNet uses 1.001e-5. Ported torch weights must
run with `DenseNet121(epsilon=1e-5)`, or `HANet(encoder_epsilon=1e-5)`. The encoder checkpoint
stores `model.encoder_epsilon = 1e-5` for this.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from hanet_jax.port.keras_densenet import check_arrays, densenet_leaves

TORCH_EPS = 1e-5

_OLD_STYLE = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_LAYER = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm1|conv1|norm2|conv2)$")
_TRANSITION = re.compile(r"^features\.transition(\d+)\.(norm|conv)$")
_FIXED = {"features.conv0": "conv1_conv", "features.norm0": "conv1_bn", "features.norm5": "bn"}
_DENSE_SUFFIX = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}
_TORCH_LEAF = {"weight": None, "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
               "running_var": ("batch_stats", "var")}


def normalize_key(key: str) -> str:
    """Strip `module.` and rename the old `denselayerN.norm.1.weight` to `denselayerN.norm1.weight`."""
    if key.startswith("module."):
        key = key[len("module."):]
    return _OLD_STYLE.sub(r"\1\2", key)


def keras_layer_for(module: str) -> str | None:
    """torchvision module path (new-style) -> Keras/Flax DenseNet layer name, or None."""
    if module in _FIXED:
        return _FIXED[module]
    m = _LAYER.match(module)
    if m:
        block, layer, part = m.groups()
        return f"conv{int(block) + 1}_block{int(layer)}_{_DENSE_SUFFIX[part]}"
    m = _TRANSITION.match(module)
    if m:
        block, part = m.groups()
        return f"pool{int(block) + 1}_{'bn' if part == 'norm' else 'conv'}"
    return None


def _torch_name(collection: str, layer: str, leaf: str, table: Mapping[str, str]) -> str:
    """The torchvision key behind a Flax leaf (for error messages)."""
    attr = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
    return f"{table.get(layer, layer)}.{attr}"


def state_dict_to_flax(state_dict: Mapping[str, object], source: str = "state dict") -> dict:
    """A torchvision DenseNet-121 state dict (tensors or arrays) -> `{"params", "batch_stats"}`."""
    from hanet_jax.port.weight_files import PortError

    found, unexpected = {}, []
    for raw_key, value in state_dict.items():
        key = normalize_key(raw_key)
        if key.startswith("classifier.") or key.endswith("num_batches_tracked"):
            continue
        module, _, attr = key.rpartition(".")
        layer = keras_layer_for(module)
        if layer is None or attr not in _TORCH_LEAF:
            unexpected.append(raw_key)
            continue
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if attr == "weight":
            if array.ndim == 4:  # conv: OIHW -> HWIO
                found[("params", layer, "kernel")] = np.transpose(array, (2, 3, 1, 0))
            else:  # BN gamma
                found[("params", layer, "scale")] = array
        else:
            collection, leaf = _TORCH_LEAF[attr]
            found[(collection, layer, leaf)] = array
    if unexpected:
        shown = ", ".join(unexpected[:10]) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 10 else "")
        raise PortError(f"{source}: keys that torchvision's DenseNet-121 does not have: {shown}")
    table = {layer: module for module, layer in _torch_table().items()}
    return check_arrays(source, found, describe=lambda k: _torch_name(*k, table))


def _torch_table() -> dict[str, str]:
    """{torchvision module: Keras layer} for every DenseNet-121 layer."""
    layers = {layer for _, layer, _ in densenet_leaves()}
    table = dict(_FIXED)
    for layer in layers:
        m = re.match(r"^conv(\d+)_block(\d+)_(0_bn|1_conv|1_bn|2_conv)$", layer)
        if m:
            part = {v: k for k, v in _DENSE_SUFFIX.items()}[m.group(3)]
            table[f"features.denseblock{int(m.group(1)) - 1}.denselayer{m.group(2)}.{part}"] = layer
        m = re.match(r"^pool(\d+)_(bn|conv)$", layer)
        if m:
            table[f"features.transition{int(m.group(1)) - 1}.{'norm' if m.group(2) == 'bn' else 'conv'}"] = layer
    return table


def load_torch_densenet121(path: str | os.PathLike) -> dict:
    """Port a torchvision `densenet121-*.pth` to `{"params", "batch_stats"}` for
    `DenseNet121(epsilon=TORCH_EPS)`. Raises `PortError` naming the file and the keys at fault."""
    from hanet_jax.port.weight_files import PortError

    path = Path(path)
    if not path.is_file():
        raise PortError(f"weights file {path} does not exist")
    try:
        import torch
    except ImportError as e:
        raise PortError("reading .pth files needs PyTorch (pip install torch, CPU build is enough)") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or non-weights files
        raise PortError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise PortError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state_dict_to_flax(state, str(path))
