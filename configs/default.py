r"""Synthetic breast-ultrasound phantoms: the full pipeline on any machine, in a few minutes.

    python train.py --config=configs/default.py --workdir=/tmp/hanet_default

No dataset needed: training and validation phantoms (hanet_jax.data.synthetic) are generated
from `data.seed`. The model is the full HA-Net at 64x64, trained with the release's optimiser,
schedule and loss; `bash scripts/main.sh` trains it and scores a held-out synthetic split
(docs/results.md quotes that run's time and Dice). Validation Dice is erratic over
the first epochs, while BatchNorm's running statistics catch up. Scale it up with
e.g. --config.model.image_size=128 --config.data.n_train=1000 --config.num_epochs=50.
"""

from hanet_jax.train import recipes


def get_config():
    config = recipes.get_config()
    config.model.image_size = 64
    config.data.source = "synthetic"
    config.data.n_train = 240
    config.data.n_val = 64
    # Many small steps rather than few large ones: BatchNorm's running statistics (momentum
    # 0.99, as Keras) need a few hundred steps before validation, which uses them, is reliable.
    config.batch_size = 4
    config.num_epochs = 8        # 480 steps
    config.log_every_steps = 20
    return config
