r"""Train HA-Net.

    python train.py --config=configs/default.py --workdir=/tmp/hanet_default
    python train.py --config=configs/busi.py --workdir=/tmp/busi \
        --config.data.root=DATA_ROOT/BUSI --config.batch_size=16

The command lives in hanet_jax/train/cli.py (also installed as `hanet-train`); `--help` lists
its flags (multi-process training among them).
"""

from hanet_jax.train.cli import main, run  # noqa: F401

if __name__ == "__main__":
    run()
