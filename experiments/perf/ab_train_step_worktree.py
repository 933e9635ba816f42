"""Train-step images/s of the full HA-Net at 128x128, batch 16 (the cpu2h profile), on the 2-device
CPU split, from whichever hanet_jax is first on PYTHONPATH: run it alternately from a worktree of
an older commit and from the current tree (2026-12-07: a92fc7f 9.4 / 9.3, HEAD 9.3 / 8.9 images/s).

    git worktree add /tmp/old a92fc7f
    for P in $PWD /tmp/old $PWD /tmp/old; do (cd /tmp && PYTHONPATH=$P python $OLDPWD/experiments/perf/ab_train_step_worktree.py); done
"""
import json
import os
import time

from hanet_jax.ops.cpu import devices as cpu_devices
cpu_devices.split_cpu_if_cpu_only(16)
import jax, numpy as np
import hanet_jax  # noqa: E402  (which tree this is)
from hanet_jax.models.hanet import HANet
from hanet_jax.train.keras_callbacks import ReduceLROnPlateau
from hanet_jax.train.optimizer import make_tx
from hanet_jax.train.sharding import make_mesh, batch_sharded
from hanet_jax.train.state import create_train_state
from hanet_jax.train.steps import compiled_steps
model = HANet(variant="full"); tx = make_tx(1e-3, 0.9, 0.999, 1e-9); mesh = make_mesh()
state = create_train_state(model, 128, tx, ReduceLROnPlateau(), 0, mesh)
rng = np.random.default_rng(0)
batch = jax.device_put({"image": rng.uniform(size=(16, 128, 128, 3)).astype(np.float32),
                        "mask": (rng.uniform(size=(16, 128, 128, 1)) < 0.3).astype(np.float32)}, batch_sharded(mesh))
train = compiled_steps(model, "bce_dice", tx, mesh).train
for _ in range(2):
    state, m = train(state, batch); jax.block_until_ready(m)
ts = []
for _ in range(10):
    t = time.perf_counter(); state, m = train(state, batch); jax.block_until_ready(m); ts.append(time.perf_counter() - t)
print(json.dumps({"src": os.path.dirname(hanet_jax.__file__), "devices": jax.device_count(), "img_s": 16 / float(np.median(ts))}))
