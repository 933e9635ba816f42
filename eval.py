"""Evaluate a checkpoint on a dataset split: metrics JSON, per-image CSV, overlays, Grad-CAM.

    python eval.py --checkpoint=DIR --data_dir=ROOT --layout=processed --split=test \
        --protocol=both --out=results.json [--per_image=per_image.csv] [--tta] ...
    python eval.py --checkpoint=WORKDIR --run_split=test --threshold_from_split=val \
        --protocol=both --out=results.json

The command lives in hanet_jax/eval/cli.py (also installed as `hanet-eval`); `--help` lists
its flags and protocols.
"""

from hanet_jax.eval.cli import main, run

if __name__ == "__main__":
    run()
