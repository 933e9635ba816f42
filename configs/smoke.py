r"""A smoke test of the whole training loop: tiny phantoms, two steps, about two minutes on CPU.

    python train.py --config=configs/smoke.py --workdir=/tmp/hanet_smoke

The full HA-Net (TAM with dropout, SFEB) at 64x64 on synthetic phantoms; the global batch (8)
divides by 1, 2, 4 and 8 devices, so the same run can be repeated on simulated devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 \
        python train.py --config=configs/smoke.py --workdir=/tmp/hanet_smoke4

Both end with the same `final_train_loss` in WORKDIR/summary.json to about 1e-3 (relative;
measured 1.7284207 on one device vs 1.7289939 on four). On a CPU-only host the first command
now runs on two devices (hanet_jax/cpu_devices.py); HANET_CPU_DEVICES=1 keeps one. Only the first step is the same to float rounding on any
device count: sharding changes the order of floating-point sums (BatchNorm moments, gradients),
and training on tiny batches amplifies such last-bit differences step by step, exactly as feeding
the same batch in another order on one device does (tests/test_train_distributed.py measures
both). Hence two steps here (one per epoch, so the end-of-epoch path, validation, schedule and
checkpoints, runs twice).
"""

from hanet_jax.train import recipes


def get_config():
    config = recipes.get_config()
    config.model.image_size = 64
    config.data.source = "synthetic"
    config.data.n_train = 8
    config.data.n_val = 8
    config.batch_size = 8
    config.num_epochs = 2        # 1 step per epoch
    config.log_every_steps = 1
    config.num_overlays = 2
    return config
