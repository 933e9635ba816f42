"""`python -m hanet_jax.port KIND --weights FILE --out DIR`: foreign weights -> an Orbax checkpoint.

KIND:
  keras-hanet     a Keras 3 `.weights.h5` of the released HA-Net (`--variant`, `--image_size`)
  keras-densenet  Keras DenseNet-121 ImageNet weights (legacy `.h5` download or Keras 3
                  `.weights.h5`) -> an encoder checkpoint (BN eps 1.001e-5)
  torch-densenet  torchvision `densenet121-*.pth` -> an encoder checkpoint (BN eps 1e-5)

An encoder checkpoint initialises HA-Net's encoder: `--config.init_from=DIR
--config.init_scope=encoder` in training.
"""

from __future__ import annotations

import argparse
import sys

from hanet_jax.checkpoints.format import CheckpointError, save_variables
from hanet_jax.models.hanet import HANet, model_config


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
                 "torch-densenet": (load_torch_densenet121, TORCH_EPS)}[args.kind]
    out = save_encoder_checkpoint(args.out, load(args.weights), epsilon=eps,
                                  source={"kind": args.kind, "weights": str(args.weights)})
    print(f"ported {args.weights} (DenseNet-121, BN eps {eps}) -> encoder checkpoint {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hanet_jax.port", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("keras-hanet", help="Keras 3 .weights.h5 of the released HA-Net")
    p.add_argument("--weights", required=True)
    p.add_argument("--variant", default="full", choices=("full", "no_tam", "no_tam_no_sfeb", "baseline"))
    p.add_argument("--image_size", type=int, nargs="+", default=[256], help="H [W], multiples of 32")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_keras_hanet)
    for kind, help_text in (
        ("keras-densenet", "Keras DenseNet-121 weights (.h5 or .weights.h5) -> encoder checkpoint"),
        ("torch-densenet", "torchvision densenet121-*.pth -> encoder checkpoint"),
    ):
        p = sub.add_parser(kind, help=help_text)
        p.add_argument("--weights", required=True)
        p.add_argument("--out", required=True)
        p.set_defaults(run=_densenet)
    args = parser.parse_args(argv)
    from hanet_jax.port.keras import PortError

    try:
        return args.run(args)
    except (PortError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
