"""Segment every image in a folder with a ported checkpoint, a training workdir or an ensemble.

    python predict.py --checkpoint=DIR --input=FOLDER --output=FOLDER [--probabilities] [--tta]
    python predict.py --checkpoint=WORKDIR --settings_from=WORKDIR/eval_test.json ...

The command lives in hanet_jax/inference/cli.py (also installed as `hanet-predict`); `--help`
lists its flags.
"""

from hanet_jax.inference.cli import SettingsError, fixed_settings, main, run  # noqa: F401

if __name__ == "__main__":
    run()
