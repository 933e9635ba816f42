"""The train and eval steps: pure functions, jitted with the mesh's shardings (state replicated,
batch sharded on its first dimension, the state donated). `train.py` and `bench.py` run the same
`compiled_steps(...).train`. Both take the host's uint8 batches (float ones pass through) and
convert them on the device; the train step augments there too (`data.augment.device_batch`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import optax

from hanet_jax.data.augment import AugmentConfig, device_batch
from hanet_jax.train.keras_callbacks import scale_updates
from hanet_jax.train.losses import deep_supervision_loss, make_loss
from hanet_jax.train.metrics import EvalMetrics, TrainMetrics
from hanet_jax.train.sharding import batch_sharded, replicated
from hanet_jax.train.state import TrainState, ema_update


@functools.lru_cache(maxsize=None)
def make_loss_fn(name: str):
    """`make_loss(name)`, the same object for the same name, so jitted steps keyed on it are reused."""
    return make_loss(name)


def train_step(state: TrainState, batch, *, model, loss_fn, tx, ema_decay: float = 0.0,
               augment: AugmentConfig | None = None, seed: int = 0):
    """One Adam step on a global batch, augmented on the device with keys from (`seed`, epoch,
    example index); dropout key fold_in(state.rng, state.step); then the EMA's step when the
    state has one."""
    batch = device_batch(batch, augment=augment, seed=seed)
    dropout_key = jax.random.fold_in(state.rng, state.step)

    supervised = getattr(model, "deep_supervision", False)

    def loss_of(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats", "intermediates"] if supervised else ["batch_stats"],
            rngs={"dropout": dropout_key})
        if supervised:  # the decoder stages' heads too, weights halving per stage
            loss = deep_supervision_loss(loss_fn, logits,
                                         updates["intermediates"]["deep_supervision"],
                                         batch["mask"])
        else:
            loss = loss_fn(logits, batch["mask"])
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, scale_updates(updates, state.plateau.scale))
    metrics = TrainMetrics.single_from_model_output(loss=loss, logits=logits, targets=batch["mask"])
    ema = state.ema
    if ema is not None:
        ema = ema_update(ema, {"params": params, "batch_stats": batch_stats}, state.step,
                         ema_decay)
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state, ema=ema), metrics


def eval_step(state: TrainState, batch, *, model, loss_fn):
    """Validation metrics of a padded global batch (padding has weight 0), and predictions."""
    batch = device_batch(batch)
    logits = model.apply(state.eval_variables, batch["image"], train=False)
    loss = loss_fn(logits, batch["mask"], batch["valid"])
    metrics = EvalMetrics.single_from_model_output(loss=loss, logits=logits, targets=batch["mask"],
                                                   valid=batch["valid"])
    return metrics, logits > 0


@dataclasses.dataclass(frozen=True)
class Steps:
    train: Callable
    eval: Callable


_STEPS: dict = {}


def compiled_steps(model, loss_name: str, tx, mesh, ema_decay: float = 0.0,
                   augment: AugmentConfig | None = None, seed: int = 0) -> Steps:
    """jitted train/eval steps, cached per (model, loss, optimiser, mesh, EMA decay,
    augmentation, seed)."""
    key = (model, loss_name, tx, mesh, ema_decay, augment, seed)
    if key not in _STEPS:
        loss_fn, repl, data = make_loss_fn(loss_name), replicated(mesh), batch_sharded(mesh)
        _STEPS[key] = Steps(
            train=jax.jit(lambda s, b: train_step(s, b, model=model, loss_fn=loss_fn, tx=tx,
                                                  ema_decay=ema_decay, augment=augment,
                                                  seed=seed),
                          in_shardings=(repl, data), out_shardings=(repl, repl),
                          donate_argnums=(0,)),
            eval=jax.jit(lambda s, b: eval_step(s, b, model=model, loss_fn=loss_fn),
                         in_shardings=(repl, data), out_shardings=(repl, data)))
    return _STEPS[key]
