"""A/B of the jitted train step before and after the package layout of issue 27.

Run once per side, each in a fresh process, alternating (the machine is noisy):

    git worktree add /tmp/oldtree 8761e63
    for i in 1 2 3; do
      python experiments/layout/ab_train_step.py --side new
      PYTHONPATH=/tmp/oldtree python experiments/layout/ab_train_step.py --side old
    done

Both sides build configs/default.py's model (full HA-Net, 64x64, batch 4) and time the step
`train.py` runs (`compiled_steps(...).train`) on the same batch: median of 40 steps after 5.
"""

import argparse
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--side", choices=("old", "new"), required=True)
parser.add_argument("--steps", type=int, default=40)
args = parser.parse_args()

import jax  # noqa: E402

if args.side == "new":
    from hanet_jax.models.hanet import HANet
    from hanet_jax.train.keras_callbacks import ReduceLROnPlateau
    from hanet_jax.train.optimizer import make_tx
    from hanet_jax.train.sharding import make_mesh
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import compiled_steps
else:
    from hanet_jax.models.hanet import HANet
    from hanet_jax.plateau import ReduceLROnPlateau
    from hanet_jax.train_lib import compiled_steps
    from hanet_jax.train_state import create_train_state, make_mesh, make_tx

model = HANet(variant="full")
tx = make_tx(1e-3, 0.9, 0.999, 1e-9)
mesh = make_mesh()
state = create_train_state(model, 64, tx, ReduceLROnPlateau(), 0, mesh)
step = compiled_steps(model, "bce_jaccard", tx, mesh).train
rng = np.random.default_rng(0)
batch = {"image": rng.uniform(size=(4, 64, 64, 3)).astype(np.float32),
         "mask": (rng.uniform(size=(4, 64, 64, 1)) < 0.3).astype(np.float32)}
times = []
for i in range(5 + args.steps):
    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= 5:
        times.append(time.perf_counter() - t)
print(f"{args.side}: median step {1e3 * float(np.median(times)):.1f} ms over {args.steps}")
