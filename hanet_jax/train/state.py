"""The training state: everything that changes on the device during training, and its creation.

The host-side rest (early stopping, history, data position) lives in the checkpoint's JSON
(hanet_jax/checkpoints/training.py).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from hanet_jax.train.sharding import replicate, replicated, to_host


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32: training steps done (= the next global batch index)
    params: Any
    batch_stats: Any
    opt_state: Any           # Adam moments (per-step)
    plateau: Any             # ReduceLROnPlateauState: its `scale` x learning_rate = lr in force
    rng: jax.Array           # uint32[2] base key; step s uses fold_in(rng, s) for dropout
    # {"params", "batch_stats"} averaged over steps (config.optimizer.ema_decay > 0), or None
    ema: Any = None

    @property
    def variables(self) -> dict:
        """The live weights: what the optimiser updates."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def eval_variables(self) -> dict:
        """What validation, model selection and export use: the EMA when there is one."""
        return self.variables if self.ema is None else self.ema


def ema_update(ema, live, step, decay: float):
    """One step of the weights' moving average; `step` is the number of updates done before
    this one. The decay warms up as min(decay, (1+t)/(10+t)) (TensorFlow's
    ExponentialMovingAverage with num_updates), so early averages are not dominated by the
    random initialisation. Hand-written because `optax.ema` debiases instead of warming up, which
    weights the first steps differently from the TF recipe the runs in docs/results.md used."""
    t = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    return jax.tree.map(lambda e, x: (d * e + (1.0 - d) * x).astype(x.dtype), ema, live)


@functools.lru_cache(maxsize=8)
def _jit_init(model: nn.Module, image_size: int, tx, plateau, ema: bool = False):
    def init(seed):
        params_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init({"params": params_key},
                               jnp.zeros((1, image_size, image_size, 3), jnp.float32), train=False)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), plateau=plateau.init(), rng=dropout_key,
                          ema={"params": params, "batch_stats": batch_stats} if ema else None)
    return jax.jit(init)


def create_train_state(model: nn.Module, image_size: int, tx, plateau, seed: int,
                       mesh: Mesh, ema: bool = False) -> TrainState:
    """A fresh state, replicated over `mesh`; with `ema`, the average starts at the init.

    Computed on one device (the init program is then the same for any mesh: compiled once per
    model, size and optimiser), by process 0 only when there are several processes, which get
    its values by a broadcast (no process compiles or runs init but the first).
    """
    init = _jit_init(model, image_size, tx, plateau, ema)
    if jax.process_index() == 0:
        host = to_host(init(jax.device_put(np.int32(seed), jax.local_devices()[0])))
    else:
        host = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(init, seed))
    if jax.process_count() > 1:
        host = multihost_utils.broadcast_one_to_all(host)
    return replicate(host, mesh)


def abstract_train_state(model: nn.Module, image_size: int, tx, plateau, mesh: Mesh,
                         ema: bool = False) -> TrainState:
    """`create_train_state`'s result as shapes, dtypes and shardings (replicated over `mesh`,
    not weakly typed, as `replicate` places the host's values), with nothing compiled or run:
    the target a resume restores into, and enough to trace and lower the train step for any
    platform (tests/test_lowering.py), without compiling the init program (about 20 s for a
    tiny encoder on this 2-core CPU under load)."""
    shapes = jax.eval_shape(_jit_init(model, image_size, tx, plateau, ema), 0)
    sharding = replicated(mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
