"""The optimiser, its learning-rate schedule and the per-epoch callbacks, built from config.optimizer."""

from __future__ import annotations

import functools

import optax

from hanet_jax.train import keras_callbacks


# Cached so that equal configs give the same objects, and jitted steps keyed on them are reused.
@functools.lru_cache(maxsize=None)
def make_tx(learning_rate: float, b1: float, b2: float, eps: float,
            cosine_steps: int = 0, min_lr: float = 0.0,
            weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (AdamW's decoupled decay on kernels with weight_decay > 0); with cosine_steps > 0
    its rate follows a cosine from learning_rate to min_lr."""
    return keras_callbacks.adam(learning_rate_schedule(learning_rate, cosine_steps, min_lr),
                            b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def learning_rate_schedule(learning_rate: float, cosine_steps: int = 0, min_lr: float = 0.0):
    """The per-step rate: a constant (the release: the plateau scales it per epoch) or a cosine
    over `cosine_steps` steps to min_lr."""
    if cosine_steps <= 0:
        return learning_rate
    return optax.cosine_decay_schedule(learning_rate, cosine_steps, alpha=min_lr / learning_rate)


def optimizer_from_config(opt, total_steps: int = 0) -> tuple[
        optax.GradientTransformation, keras_callbacks.ReduceLROnPlateau, keras_callbacks.EarlyStopping]:
    """(per-step Adam, once-per-epoch ReduceLROnPlateau, EarlyStopping) of config.optimizer.

    With opt.schedule == "cosine" Adam's rate decays over `total_steps` (the run's length) and
    the trainer leaves the plateau's scale at 1.
    """
    cosine_steps = 0
    if opt.schedule == "cosine":
        if total_steps <= 0:
            raise ValueError("optimizer.schedule=cosine needs the run's total_steps")
        cosine_steps = int(total_steps)
    tx = make_tx(float(opt.learning_rate), float(opt.b1), float(opt.b2), float(opt.eps),
                 cosine_steps, float(opt.min_lr), float(opt.weight_decay))
    plateau = keras_callbacks.ReduceLROnPlateau(
        learning_rate=float(opt.learning_rate), factor=float(opt.plateau_factor),
        patience=int(opt.plateau_patience), min_delta=float(opt.plateau_min_delta),
        cooldown=int(opt.plateau_cooldown), min_lr=float(opt.min_lr))
    stopper = keras_callbacks.EarlyStopping(min_delta=float(opt.early_stopping_min_delta),
                                        patience=int(opt.early_stopping_patience))
    return tx, plateau, stopper
