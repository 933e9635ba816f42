"""Inference images/s of the full HA-Net at 256x256, batch 8, on the 2-device CPU split, from whichever
hanet_jax is first on PYTHONPATH: run it alternately from a worktree of an older commit and from
the current tree to see whether a change slowed inference (docs/benchmark.md, 2026-12-07).

    git worktree add /tmp/old a92fc7f
    for P in /tmp/old $PWD /tmp/old $PWD; do (cd /tmp && PYTHONPATH=$P python $OLDPWD/experiments/perf/ab_infer_worktree.py); done
"""
import json
import os
import time

os.environ.setdefault("HANET_CPU_DEVICES", "2")
from hanet_jax.ops.cpu import devices as cpu_devices
cpu_devices.split_cpu_if_cpu_only(8)
import jax, numpy as np
from hanet_jax.bench.keras_comparison import fast_init, synthetic_batch
from hanet_jax.models.hanet import HANet
from hanet_jax.train.sharding import make_mesh, batch_sharded, replicated
import hanet_jax  # noqa: E402  (which tree this is)
mesh = make_mesh(); model = HANet(variant="full")
v = jax.device_put(fast_init(model, (1, 256, 256, 3)), replicated(mesh))
x = jax.device_put(synthetic_batch(8, (256, 256))["image"], batch_sharded(mesh))
f = jax.jit(lambda v, x: model.apply(v, x, train=False), in_shardings=(replicated(mesh), batch_sharded(mesh)), out_shardings=batch_sharded(mesh)).lower(v, x).compile()
f(v, x).block_until_ready()
ts = []
for _ in range(7):
    t = time.perf_counter(); f(v, x).block_until_ready(); ts.append(time.perf_counter() - t)
print(json.dumps({"src": os.path.dirname(hanet_jax.__file__), "devices": jax.device_count(), "img_s": 8 / float(np.median(ts))}))
