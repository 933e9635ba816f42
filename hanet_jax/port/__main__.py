"""`python -m hanet_jax.port KIND --weights FILE --out DIR`: foreign weights -> an Orbax checkpoint.

KIND:
  keras-hanet   a Keras 3 `.weights.h5` of the released HA-Net (`--variant`, `--image_size`)
"""

from __future__ import annotations

import argparse
import sys

from hanet_jax.checkpoints import CheckpointError, save_variables
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
    args = parser.parse_args(argv)
    from hanet_jax.port.keras import PortError

    try:
        return args.run(args)
    except (PortError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
