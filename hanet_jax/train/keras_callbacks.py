"""The release's optimiser and epoch-level schedule: Adam, Keras ReduceLROnPlateau, EarlyStopping.

Split so that only validation losses drive the schedule:
- per step: `adam(lr)` gives updates, `scale_updates(updates, plateau.scale(state))` multiplies
  them by the plateau scale (for Adam this is exactly a change of learning rate: the moments
  do not depend on it);
- per epoch: `state = plateau.step(state, val_loss)` and `stopper = stopper.update(val_loss)`.

    plateau = ReduceLROnPlateau()          # the release: lr 1e-3, x0.25 after 4 flat epochs
    state, stopper = plateau.init(), EarlyStopping()
    tx = adam(plateau.learning_rate)
    for epoch in ...:
        ...  train steps: updates = scale_updates(tx.update(...)[0], plateau.scale(state))
        state = plateau.step(state, val_loss)
        stopper = stopper.update(val_loss)
        if stopper.improved: keep these weights as the best
        if stopper.stop: break
    restore the best weights (Keras does at the end of training, stopped early or not)

Keras -> optax.contrib.reduce_on_plateau (optax 0.2.8), fed one value per epoch
(accumulation_size=1):
- min_delta -> atol, rtol = 0: both call it an improvement iff val < best - min_delta.
- factor, patience and min_lr -> factor, patience and min_scale = min_lr / lr.
- cooldown C -> C - 1 (0 for C <= 1). Keras decrements its cooldown counter at the top of an
  epoch and then already counts that epoch when the counter reaches 0, so it skips C - 1 epochs;
  optax skips C. Checked epoch by epoch in tests/test_plateau.py.
Remaining differences (only the first two can change the schedule, and only in corner cases):
- Keras compares float32(val + min_delta) < float32(best); optax float32(val) < best - atol
  in float32: they may disagree when an improvement is within float32 rounding of min_delta.
- Keras' first value is always the best (best starts as None); optax's best starts at +inf, so
  a NaN or +inf first val_loss is "best" for Keras only.
- At min_lr Keras stops counting reductions; optax keeps "reducing" to the same floor.
- patience must be >= 1 (optax compares the count with == patience; Keras' patience 0 would
  reduce after every non-improving epoch).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import ReduceLROnPlateauState


def adam(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-9, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The release's Adam (Keras: lr 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-9).

    Keras adds epsilon to sqrt(v) before bias correction, optax after: Keras' step equals
    optax's with eps / sqrt(1 - b2^t), a difference that only matters where sqrt(v̂) is near 1e-9.

    weight_decay > 0: AdamW's decoupled decay (the step also subtracts lr * weight_decay * w) on
    the conv and dense kernels only, not on biases or BatchNorm scales. It is folded into the
    Adam transform, so the optimiser state is Adam's with or without it and a checkpoint
    resumes under either setting. Kept rather than `optax.adamw(mask=...)` for that reason:
    adamw's chain adds a masked decay state, so its state tree differs from `optax.adam`'s and a
    run could not switch weight decay on or off when it resumes.
    """
    if weight_decay == 0.0:
        return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
    return optax.chain(_adam_with_kernel_decay(b1, b2, eps, weight_decay),
                       optax.scale_by_learning_rate(learning_rate))


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def _adam_with_kernel_decay(b1, b2, eps, weight_decay) -> optax.GradientTransformation:
    inner = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the parameters: tx.update(grads, state, params)")
        updates, state = inner.update(updates, state, params)
        updates = jax.tree_util.tree_map_with_path(
            lambda path, u, w: u + weight_decay * w if _is_kernel(path) else u, updates, params)
        return updates, state

    return optax.GradientTransformation(inner.init, update)


def scale_updates(updates, scale):
    """Multiply every update by the plateau scale (lr in force = learning_rate · scale)."""
    return jax.tree.map(lambda u: u * jnp.asarray(scale, u.dtype), updates)


@dataclasses.dataclass(frozen=True)
class ReduceLROnPlateau:
    """Keras ReduceLROnPlateau(monitor="val_loss", mode="min") on optax's reduce_on_plateau.

    Defaults are the release's: factor 0.25, patience 4, min_delta 1e-4 (absolute), cooldown 0,
    min_lr 1e-9, starting from learning_rate 1e-3.
    """
    learning_rate: float = 1e-3
    factor: float = 0.25
    patience: int = 4
    min_delta: float = 1e-4
    cooldown: int = 0
    min_lr: float = 1e-9

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.min_delta <= 0:
            raise ValueError(f"min_delta must be > 0 (optax needs atol > 0), got {self.min_delta}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"need 0 <= min_lr <= learning_rate, got {self.min_lr}, {self.learning_rate}")

    @property
    def transform(self) -> optax.GradientTransformationExtraArgs:
        return optax.contrib.reduce_on_plateau(
            factor=self.factor, patience=self.patience, rtol=0.0, atol=self.min_delta,
            cooldown=max(self.cooldown - 1, 0), accumulation_size=1,
            min_scale=self.min_lr / self.learning_rate)

    def init(self) -> ReduceLROnPlateauState:
        # The state takes its dtypes from the params it is given; float32, like the Adam step.
        return self.transform.init(jnp.zeros((), jnp.float32))

    def step(self, state: ReduceLROnPlateauState, val_loss) -> ReduceLROnPlateauState:
        """Feed one epoch's validation loss; the returned state holds the next epoch's scale."""
        return _plateau_step(self, state, jnp.asarray(val_loss, jnp.float32))

    @staticmethod
    def scale(state: ReduceLROnPlateauState) -> jax.Array:
        return state.scale

    def lr(self, state: ReduceLROnPlateauState) -> float:
        """The learning rate in force: learning_rate · scale."""
        return self.learning_rate * float(state.scale)


@functools.partial(jax.jit, static_argnums=0)
def _plateau_step(plateau: ReduceLROnPlateau, state, value):
    # Compiled once per configuration: eagerly, optax's lax.cond costs ~0.2 s per epoch on CPU.
    return plateau.transform.update((), state, value=value)[1]


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Keras EarlyStopping(monitor="val_loss", mode="min", restore_best_weights=True), one
    immutable state per epoch: `stopper = stopper.update(val_loss)`.

    As Keras: the wait counter grows every epoch and resets on an improvement, which is
    float32(val + min_delta) < float32(best) (the first epoch always improves); training stops
    when wait >= patience (never at epoch 0). `best_epoch` (0-based) names the weights to
    restore. Defaults are the release's: min_delta 1e-3, patience 9.

    Hand-written, in ~30 lines, because no JAX library has early stopping with Keras' exact rule
    (float32 comparison, the first epoch always an improvement, restore_best_weights); the
    release's stopping epoch and best checkpoint depend on it (tests/test_plateau.py checks it
    epoch by epoch against Keras' own callback).
    """
    min_delta: float = 1e-3
    patience: int = 9
    epoch: int = -1            # last epoch seen, 0-based
    best: Optional[float] = None
    best_epoch: int = -1
    wait: int = 0
    stop: bool = False

    @property
    def improved(self) -> bool:
        """Whether the last epoch was the new best (save its weights)."""
        return self.epoch >= 0 and self.best_epoch == self.epoch

    def update(self, val_loss: float) -> "EarlyStopping":
        if self.stop:
            raise RuntimeError("EarlyStopping.update called after it said stop")
        epoch, value, wait = self.epoch + 1, float(val_loss), self.wait + 1
        # Keras: less(current - (-min_delta), best), the difference taken in Python floats and
        # both sides then converted to float32 tensors.
        if self.best is None or np.float32(value + abs(self.min_delta)) < np.float32(self.best):
            return dataclasses.replace(self, epoch=epoch, best=value, best_epoch=epoch, wait=0)
        return dataclasses.replace(self, epoch=epoch, wait=wait,
                                   stop=wait >= self.patience and epoch > 0)

