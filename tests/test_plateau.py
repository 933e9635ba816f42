"""The optax-based schedule against Keras' ReduceLROnPlateau / EarlyStopping, epoch by epoch."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hanet_jax.train.keras_callbacks import EarlyStopping, ReduceLROnPlateau, adam, scale_updates

# 40 epochs of validation loss: gains below and above min_delta (1e-4 for the plateau, 1e-3
# for early stopping), flat stretches, and enough reductions to reach min_lr. No gain sits
# within float32 rounding of a min_delta, where Keras and optax may round differently.
VAL_LOSS = [
    1.0, 0.9, 0.8,                        # 0-2: improve
    0.79996, 0.79994, 0.8, 0.81,          # 3-6: gains under 1e-4 do not count -> reduce after 6
    0.7997,                               # 7: 3e-4, improves the plateau only
    0.7999, 0.79965, 0.85,                # 8-10: 5e-5 below the best is no improvement
    0.7985,                               # 11: improves both
    0.80, 0.80, 0.80, 0.80,               # 12-15: -> reduce
    0.80, 0.80, 0.80, 0.80,               # 16-19: -> reduce, clamped to min_lr
    0.70,                                 # 20: improves both
    0.70, 0.70, 0.70, 0.70,               # 21-24: at min_lr, nothing left to reduce
    0.69996, 0.69993, 0.69997, 0.69994,   # 25-28: improvements for neither
    0.6996,                               # 29: 4e-4, plateau only; early stopping's 9th flat epoch
    0.6992, 0.6988, 0.6984, 0.6980, 0.6976, 0.6972, 0.6968, 0.6964, 0.6960, 0.6956,  # 30-39
]


def _margins(losses, min_delta):
    """|(best - min_delta) - value| for every epoch after the first, with Keras' running best."""
    best, out = losses[0], []
    for v in losses[1:]:
        out.append(abs(best - min_delta - v))
        best = v if v < best - min_delta else best
    return np.array(out)


def test_scripted_losses_stay_clear_of_float32_ties():
    for min_delta in (1e-4, 1e-3):
        assert _margins(VAL_LOSS, min_delta).min() > 1e-6


class KerasReduceLROnPlateau:
    """keras/src/callbacks/reduce_lr_on_plateau.py (Keras 3.15), mode "min", transcribed."""

    def __init__(self, lr, factor, patience, min_delta, cooldown, min_lr):
        self.lr, self.factor, self.patience = lr, factor, patience
        self.min_delta, self.cooldown, self.min_lr = -abs(min_delta), cooldown, min_lr
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def _is_improvement(self, current):
        # MonitorCallback: ops.less(current - min_delta, best) on float32 tensors.
        return self.best is None or np.float32(current - self.min_delta) < np.float32(self.best)

    def on_epoch_end(self, current):
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= self.patience and self.lr > np.float32(self.min_lr):
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0


class KerasEarlyStopping:
    """keras/src/callbacks/early_stopping.py (Keras 3.15), mode "min", no baseline, transcribed."""

    def __init__(self, min_delta, patience):
        self.min_delta, self.patience = -abs(min_delta), patience
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, 0, 0, None

    def on_epoch_end(self, epoch, current):
        self.wait += 1
        if self.best is None or np.float32(current - self.min_delta) < np.float32(self.best):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch


def _optax_lrs(plateau, losses):
    state, lrs = plateau.init(), []
    for v in losses:
        state = plateau.step(state, v)
        lrs.append(plateau.lr(state))
    return lrs


# A long flat run: reductions every patience + skipped-cooldown epochs expose any off-by-one.
FLAT_LOSS = [1.0] * 30


@pytest.mark.parametrize("cooldown", [0, 1, 2, 3])
@pytest.mark.parametrize("losses", [VAL_LOSS, FLAT_LOSS], ids=["scripted", "flat"])
def test_plateau_matches_keras_transcription(losses, cooldown):
    cfg = dict(factor=0.25, patience=4, min_delta=1e-4, cooldown=cooldown,
               min_lr=2e-5 if losses is VAL_LOSS else 1e-9)
    plateau = ReduceLROnPlateau(learning_rate=1e-3, **cfg)
    keras_cb = KerasReduceLROnPlateau(lr=1e-3, **cfg)
    keras_lrs = []
    for v in losses:
        keras_cb.on_epoch_end(v)
        keras_lrs.append(keras_cb.lr)
    np.testing.assert_allclose(_optax_lrs(plateau, losses), keras_lrs, rtol=1e-6)
    if cooldown == 0 and losses is VAL_LOSS:  # the release's setting: the schedule reaches min_lr
        assert sorted(set(keras_lrs), reverse=True) == pytest.approx([1e-3, 2.5e-4, 6.25e-5, 2e-5])
        # lrs[e] is the rate in force for epoch e + 1: the first reduction follows epoch 6.
        assert keras_lrs[5] == pytest.approx(1e-3) and keras_lrs[6] == pytest.approx(2.5e-4)


def test_plateau_release_defaults_reach_min_lr():
    plateau = ReduceLROnPlateau()  # 1e-3 * 0.25**10 < 1e-9: the tenth reduction hits the floor
    lrs = _optax_lrs(plateau, [1.0] * 45)
    assert lrs[3] == pytest.approx(1e-3) and lrs[4] == pytest.approx(2.5e-4)
    assert lrs[39] == pytest.approx(1e-3 * 0.25**9, rel=1e-6)
    assert lrs[40] == pytest.approx(1e-9, rel=1e-6) and lrs[-1] == pytest.approx(1e-9, rel=1e-6)


@pytest.mark.parametrize("cooldown", [0, 2])
@pytest.mark.parametrize("losses", [VAL_LOSS, FLAT_LOSS], ids=["scripted", "flat"])
def test_plateau_matches_real_keras(losses, cooldown):
    keras = pytest.importorskip("keras")
    cfg = dict(factor=0.25, patience=4, min_delta=1e-4, cooldown=cooldown, min_lr=2e-5)
    model = types.SimpleNamespace(optimizer=keras.optimizers.Adam(1e-3))
    cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", **cfg)
    cb.set_model(model)
    cb.on_train_begin()
    keras_lrs = []
    for epoch, v in enumerate(losses):
        cb.on_epoch_end(epoch, {"val_loss": v})
        keras_lrs.append(float(model.optimizer.learning_rate))
    ours = _optax_lrs(ReduceLROnPlateau(learning_rate=1e-3, **cfg), losses)
    np.testing.assert_allclose(ours, keras_lrs, rtol=1e-6)  # Keras keeps the lr in float32


def _run_early_stopping(losses, **kw):
    stopper = EarlyStopping(**kw)
    for v in losses:
        stopper = stopper.update(v)
        if stopper.stop:
            break
    return stopper


def test_early_stopping_matches_keras():
    keras_es = KerasEarlyStopping(min_delta=1e-3, patience=9)
    for epoch, v in enumerate(VAL_LOSS):
        keras_es.on_epoch_end(epoch, v)
        if keras_es.stopped_epoch is not None:
            break
    ours = _run_early_stopping(VAL_LOSS)
    assert ours.stop and ours.epoch == keras_es.stopped_epoch
    assert ours.best_epoch == keras_es.best_epoch
    # By hand: 0.70 at epoch 20 is the last gain over 1e-3; epochs 21-29 gain less, so the
    # wait reaches 9 at epoch 29.
    assert (ours.best_epoch, ours.epoch, ours.best) == (20, 29, 0.70)


def test_early_stopping_matches_real_keras():
    keras = pytest.importorskip("keras")
    model = types.SimpleNamespace(stop_training=False, get_weights=lambda: [])
    cb = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", min_delta=1e-3, patience=9,
                                       restore_best_weights=True)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, v in enumerate(VAL_LOSS):
        cb.on_epoch_end(epoch, {"val_loss": v})
        if model.stop_training:
            break
    ours = _run_early_stopping(VAL_LOSS)
    assert (ours.epoch, ours.best_epoch) == (cb.stopped_epoch, cb.best_epoch)


def test_early_stopping_state_machine():
    s = EarlyStopping(patience=2).update(1.0)
    assert s.improved and s.best_epoch == 0 and not s.stop
    s = s.update(0.9995)  # gain below min_delta
    assert not s.improved and s.wait == 1 and not s.stop
    s = s.update(0.5)
    assert s.improved and s.wait == 0
    s = s.update(0.6).update(0.6)
    assert s.stop and s.epoch == 4 and s.best_epoch == 2
    with pytest.raises(RuntimeError):
        s.update(0.1)
    nan_first = EarlyStopping(patience=1).update(math.nan).update(0.1)  # Keras: NaN is the first best
    assert nan_first.stop and nan_first.best_epoch == 0


def test_scale_updates_is_a_learning_rate_change():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.3, -0.1])}
    tx_small, tx = adam(2.5e-4), adam(1e-3)
    u_small, _ = tx_small.update(grads, tx_small.init(params), params)
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(scale_updates(u, 0.25)["w"], u_small["w"], rtol=1e-6)


def _toy_model():
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
                       "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
              "bn": {"scale": jnp.ones((4,)), "bias": jnp.zeros((4,))}}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
             for _ in range(3)]
    return params, grads


def test_weight_decay_is_optax_adamw_on_kernels_only():
    params, grads = _toy_model()
    kernels_only = jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)
    ours = adam(1e-2, eps=1e-9, weight_decay=0.05)
    ref = optax.adamw(1e-2, eps=1e-9, weight_decay=0.05, mask=kernels_only)
    p_ours = p_ref = params
    s_ours, s_ref = ours.init(params), ref.init(params)
    for g in grads:
        u, s_ours = ours.update(g, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_ref = ref.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Against plain Adam: only the kernels moved by the decay, by lr * wd * w on the first step.
    plain = adam(1e-2, eps=1e-9)
    u_plain, _ = plain.update(grads[0], plain.init(params), params)
    u_wd, _ = ours.update(grads[0], ours.init(params), params)
    np.testing.assert_allclose(u_wd["conv"]["kernel"] - u_plain["conv"]["kernel"],
                               -1e-2 * 0.05 * params["conv"]["kernel"], rtol=1e-5, atol=1e-8)
    for path in (("conv", "bias"), ("bn", "scale"), ("bn", "bias")):
        np.testing.assert_array_equal(u_wd[path[0]][path[1]], u_plain[path[0]][path[1]])


def test_weight_decay_leaves_adams_state_as_is_so_checkpoints_resume_under_either():
    # Decay moves the parameters, never the moments: after the same gradients both optimisers
    # hold the same state, so a checkpoint of one resumes under the other.
    params, grads = _toy_model()
    for lr in (1e-3, optax.cosine_decay_schedule(1e-3, 100)):
        decayed, plain = adam(lr, weight_decay=1e-2), adam(lr)
        s_wd, s_plain = decayed.init(params), plain.init(params)
        assert jax.tree.structure(s_wd) == jax.tree.structure(s_plain)
        for g in grads:
            _, s_wd = decayed.update(g, s_wd, params)
            _, s_plain = plain.update(g, s_plain, params)
        for a, b in zip(jax.tree.leaves(s_wd), jax.tree.leaves(s_plain)):
            np.testing.assert_array_equal(a, b)
        # a state written with decay steps on without it, and vice versa
        for tx, state in ((plain, s_wd), (decayed, s_plain)):
            u, _ = tx.update(grads[0], state, params)
            assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(u))


def test_config_weight_decay_reaches_the_trainers_optimiser():
    from hanet_jax.train import recipes
    from hanet_jax.train import optimizer as train_optimizer

    params, grads = _toy_model()
    config = recipes.get_config()
    plain, _, _ = train_optimizer.optimizer_from_config(config.optimizer)
    config.optimizer.weight_decay = 0.05
    decayed, _, _ = train_optimizer.optimizer_from_config(config.optimizer)
    u_plain, _ = plain.update(grads[0], plain.init(params), params)
    u_wd, _ = decayed.update(grads[0], decayed.init(params), params)
    np.testing.assert_allclose(u_wd["conv"]["kernel"] - u_plain["conv"]["kernel"],
                               -1e-3 * 0.05 * params["conv"]["kernel"], rtol=1e-5, atol=1e-9)


def test_plateau_rejects_configs_optax_cannot_mirror():
    with pytest.raises(ValueError, match="patience"):
        ReduceLROnPlateau(patience=0)
    with pytest.raises(ValueError, match="min_delta"):
        ReduceLROnPlateau(min_delta=0.0)
