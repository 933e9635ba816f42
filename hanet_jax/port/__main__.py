"""`python -m hanet_jax.port KIND --weights=FILE --out=DIR`: foreign weights -> an Orbax checkpoint.

KIND:
  keras-hanet     a Keras 3 `.weights.h5` of the released HA-Net (`--variant`, `--image_size=H[,W]`)
  keras-densenet  Keras DenseNet-121 ImageNet weights (legacy `.h5` download or Keras 3
                  `.weights.h5`) -> an encoder checkpoint (BN eps 1.001e-5)
  torch-densenet  torchvision `densenet121-*.pth` -> an encoder checkpoint (BN eps 1e-5)

An encoder checkpoint initialises HA-Net's encoder: `--config.init_from=DIR
--config.init_scope=encoder` in training.
"""

from __future__ import annotations

import sys

from absl import flags

from hanet_jax import command_line
from hanet_jax.checkpoints.format import CheckpointError, save_variables
from hanet_jax.models.architectures import model_config
from hanet_jax.models.hanet import HANet


def _keras_hanet(args) -> int:
    from hanet_jax.port.keras import load_keras_hanet

    size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    variables = load_keras_hanet(args.weights, args.variant, size)
    cfg = model_config(HANet(variant=args.variant))
    out = save_variables(args.out, variables, model_cfg=cfg, image_size=size,
                         source={"kind": "keras-hanet", "weights": str(args.weights)})
    print(f"ported {args.weights} (variant {args.variant}, {size[0]}x{size[1]}) -> {out}")
    return 0


def _densenet(args) -> int:
    """keras-densenet / torch-densenet: DenseNet-121 weights -> an encoder checkpoint."""
    from hanet_jax.models.densenet import DENSENET_EPS
    from hanet_jax.port.keras_densenet import load_densenet121, save_encoder_checkpoint
    from hanet_jax.port.torch_densenet import TORCH_EPS, load_torch_densenet121

    load, eps = {"keras-densenet": (load_densenet121, DENSENET_EPS),
                 "torch-densenet": (load_torch_densenet121, TORCH_EPS)}[args.command]
    out = save_encoder_checkpoint(args.out, load(args.weights), epsilon=eps,
                                  source={"kind": args.command, "weights": str(args.weights)})
    print(f"ported {args.weights} (DenseNet-121, BN eps {eps}) -> encoder checkpoint {out}")
    return 0


def _weights_and_out_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("weights", None, "the weights file to port", flag_values=fv, required=True)
    flags.DEFINE_string("out", None, "the checkpoint directory to write", flag_values=fv, required=True)


def _keras_hanet_flags(fv: flags.FlagValues) -> None:
    _weights_and_out_flags(fv)
    flags.DEFINE_enum("variant", "full", ("full", "no_tam", "no_tam_no_sfeb", "baseline"),
                      "the HA-Net variant the weights are of", flag_values=fv)
    command_line.DEFINE_integer_list("image_size", [256], "H[,W], multiples of 32", flag_values=fv)
    flags.register_validator("image_size", lambda size: len(size) in (1, 2),
                             "--image_size takes H or H,W", flag_values=fv)


_PROG = "python -m hanet_jax.port"
_SYNOPSIS = "--weights=FILE --out=DIR [--flag=value ...]"
COMMAND = command_line.Command(_PROG, __doc__, subcommands={
    "keras-hanet": command_line.Command(
        f"{_PROG} keras-hanet", "Keras 3 .weights.h5 of the released HA-Net -> checkpoint",
        _keras_hanet_flags, synopsis=_SYNOPSIS),
    "keras-densenet": command_line.Command(
        f"{_PROG} keras-densenet",
        "Keras DenseNet-121 weights (.h5 or .weights.h5) -> encoder checkpoint",
        _weights_and_out_flags, synopsis=_SYNOPSIS),
    "torch-densenet": command_line.Command(
        f"{_PROG} torch-densenet", "torchvision densenet121-*.pth -> encoder checkpoint",
        _weights_and_out_flags, synopsis=_SYNOPSIS),
})


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    from hanet_jax.port.weight_files import PortError

    port = _keras_hanet if args.command == "keras-hanet" else _densenet
    try:
        return port(args)
    except (PortError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run() -> None:
    """The `hanet-port` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
