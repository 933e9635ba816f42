"""Every segmentation network a config can name, and the one way to build one from its fields.

`config.model.architecture` picks the class: `hanet` (the default), or one of the paper's
baselines (Table 6; designs and widths in docs/baselines.md):

| architecture     | class                          | fields beside `dtype`                      |
|------------------|--------------------------------|--------------------------------------------|
| `hanet`          | `hanet.HANet`                  | variant, upsampling, ... (hanet.py)        |
| `unet`           | `unet.UNet`                    | base_filters (64), upsampling              |
| `attention_unet` | `attention_unet.AttentionUNet` | base_filters (32), upsampling              |
| `unet_plus_plus` | `unet_plus_plus.UNetPlusPlus`  | base_filters (32), upsampling              |

All map float images in [0, 1], (B, H, W, 3), to logits (B, H, W, 1), so the loss, metrics,
checkpoints, inference, export and benchmarks take any of them. A checkpoint's `hanet.json`
holds `model_config(model)`, the architecture included (files written before it existed hold
HA-Net's fields alone, and mean `hanet`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn

from hanet_jax.models.attention_unet import AttentionUNet
from hanet_jax.models.hanet import HANet
from hanet_jax.models.unet import UNet
from hanet_jax.models.unet_plus_plus import UNetPlusPlus

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "hanet": HANet, "unet": UNet, "attention_unet": AttentionUNet, "unet_plus_plus": UNetPlusPlus}
DEFAULT = "hanet"


def fields(cls: type[nn.Module]) -> dict[str, Any]:
    """A module class's fields and their defaults (its constructor arguments)."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.name not in ("parent", "name") and f.default is not dataclasses.MISSING}


ALL_FIELDS = tuple(sorted({name for cls in ARCHITECTURES.values() for name in fields(cls)}))


def architecture_of(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not one of the architectures {tuple(ARCHITECTURES)}")


def model_from_config(cfg: Mapping[str, Any]) -> nn.Module:
    """The network a config's `model` section (or a `hanet.json`'s "model") describes.

    `architecture` picks the class. A key no architecture has is an error naming it; a field of
    another architecture is ignored at its default (a config's `model` section holds every
    architecture's fields) and an error otherwise, so a setting never silently does nothing;
    `base_filters=0` means the architecture's own default width; `image_size` is accepted and
    ignored (it belongs to the data, not to the module).
    """
    cfg = dict(cfg)
    name = cfg.pop("architecture", DEFAULT)
    if name not in ARCHITECTURES:
        raise ValueError(f"model.architecture must be one of {tuple(ARCHITECTURES)}, got {name!r}")
    cls = ARCHITECTURES[name]
    own = fields(cls)
    unknown = sorted(set(cfg) - set(ALL_FIELDS) - {"image_size"})
    if unknown:
        raise ValueError(f"unknown model config key(s): {', '.join('model.' + k for k in unknown)}; "
                         f"allowed: {', '.join(('architecture',) + ALL_FIELDS + ('image_size',))}")
    if cfg.get("base_filters") == 0:  # the config's "the architecture's default"
        cfg.pop("base_filters")
    foreign = [k for k in sorted(set(cfg) - set(own) - {"image_size"})
               if not _is_default(k, cfg[k])]
    if foreign:
        raise ValueError(f"{', '.join('model.' + k for k in foreign)}: not a field of "
                         f"model.architecture={name!r} (its fields: {', '.join(own)})")
    kwargs = {k: v for k, v in cfg.items() if k in own}
    if "encoder_blocks" in kwargs:  # a JSON list or a config tuple; jit needs it hashable
        kwargs["encoder_blocks"] = tuple(int(n) for n in kwargs["encoder_blocks"])
    model = cls(**kwargs)
    model.setup_checks()
    return model


def _is_default(key: str, value) -> bool:
    """Whether `value` is the default of `key` in every architecture that has the field."""
    defaults = [fields(cls)[key] for cls in ARCHITECTURES.values() if key in fields(cls)]
    normalise = (lambda v: tuple(v)) if isinstance(value, (list, tuple)) else (lambda v: v)
    return all(normalise(value) == (tuple(d) if isinstance(d, (list, tuple)) else d)
               for d in defaults)


def model_config(model: nn.Module) -> dict:
    """`{"architecture": ..., **fields}` of `model` as plain JSON values (for `hanet.json`)."""
    cfg = {"architecture": architecture_of(model)}
    for name in fields(type(model)):
        value = getattr(model, name)
        cfg[name] = list(value) if isinstance(value, tuple) else value
    return cfg
