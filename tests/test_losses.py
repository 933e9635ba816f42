"""Losses against NumPy transcriptions of the formulas (Keras' BCE included), empty masks,
padded examples and the name mapping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hanet_jax.train.losses import (LOSS_NAMES, bce_with_logits, dice_loss, focal_loss,
                              jaccard_loss_batch, jaccard_loss_per_image, make_loss)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0.0, 3.0, (3, 8, 8, 1)).astype(np.float32)   # |x| < ~12: not saturated
TARGETS = (RNG.random((3, 8, 8, 1)) < 0.3).astype(np.float32)


def keras_bce_numpy(logits, y):
    """Keras binary_crossentropy on float32 sigmoid outputs, as its backends compute it:
    p clipped to [1e-7, 1 - 1e-7] in float32 (the upper bound rounds to 1 - 2**-23), then
    -(y log p + (1 - y) log(1 - p)), mean over pixels."""
    p = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    p = np.clip(p, np.float32(1e-7), np.float32(1.0) - np.float32(1e-7))
    return np.mean(-(y * np.log(p.astype(np.float64)) + (1 - y) * np.log((np.float32(1) - p).astype(np.float64))))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_bce_equals_keras_away_from_saturation():
    expected = keras_bce_numpy(LOGITS, TARGETS)
    assert float(bce_with_logits(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-5)
    assert float(bce_with_logits(LOGITS, TARGETS, keras_clip=True)) == pytest.approx(expected, rel=1e-5)


def test_keras_clip_at_saturation():
    logits = np.array([[-30.0], [30.0]], np.float32)
    y = np.array([[1.0], [0.0]], np.float32)            # confidently wrong
    clipped = float(bce_with_logits(logits, y, keras_clip=True))
    assert clipped == pytest.approx(keras_bce_numpy(logits, y), rel=1e-6)
    # Capped: -log(1e-7) = 16.12 for a missed pixel, -log(2**-23) = 15.94 for a false alarm.
    assert float(bce_with_logits(logits[:1], y[:1], keras_clip=True)) == pytest.approx(-np.log(1e-7), rel=1e-5)
    assert float(bce_with_logits(logits[1:], y[1:], keras_clip=True)) == pytest.approx(23 * np.log(2), rel=1e-5)
    assert float(bce_with_logits(logits, y)) == pytest.approx(30.0, rel=1e-6)


def test_jaccard_batch_is_the_release_formula():
    p, y = sigmoid(LOGITS), TARGETS
    expected = 1 - (y * p).sum() / (y.sum() + p.sum() - (y * p).sum())
    assert float(jaccard_loss_batch(LOGITS, TARGETS)) == pytest.approx(expected, rel=1e-5)
    axes = (1, 2, 3)
    per = 1 - (y * p).sum(axes) / (y.sum(axes) + p.sum(axes) - (y * p).sum(axes))
    assert float(jaccard_loss_per_image(LOGITS, TARGETS)) == pytest.approx(per.mean(), rel=1e-5)
    assert abs(per.mean() - expected) > 1e-4   # the two reductions differ


def test_dice_and_focal_formulas():
    p, y, axes = sigmoid(LOGITS), TARGETS, (1, 2, 3)
    dice = 1 - (2 * (y * p).sum(axes) + 1) / (y.sum(axes) + p.sum(axes) + 1)
    assert float(dice_loss(LOGITS, TARGETS)) == pytest.approx(dice.mean(), rel=1e-5)
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, 0.25, 0.75)
    focal = np.mean(-alpha_t * (1 - p_t) ** 2 * np.log(p_t))
    assert float(focal_loss(LOGITS, TARGETS, alpha=0.25)) == pytest.approx(focal, rel=1e-4)
    assert float(focal_loss(LOGITS, TARGETS, gamma=0.0)) == pytest.approx(
        float(bce_with_logits(LOGITS, TARGETS)), rel=1e-6)


def test_weights_ignore_padded_examples():
    padded_logits = np.concatenate([LOGITS, RNG.normal(0, 5, (2, 8, 8, 1)).astype(np.float32)])
    padded_targets = np.concatenate([TARGETS, np.ones((2, 8, 8, 1), np.float32)])
    weights = np.array([1, 1, 1, 0, 0], np.float32)
    for name in LOSS_NAMES:
        loss = make_loss(name)
        assert float(loss(padded_logits, padded_targets, weights)) == pytest.approx(
            float(loss(LOGITS, TARGETS)), rel=1e-5), name
    with pytest.raises(ValueError, match="weights must have shape"):
        bce_with_logits(LOGITS, TARGETS, np.ones(2))


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("logit", [0.0, -20.0, -200.0])   # -200: sigmoid underflows to 0
def test_finite_on_empty_masks_with_gradients(name, logit):
    logits = jnp.full((2, 4, 4, 1), logit, jnp.float32)
    targets = jnp.zeros((2, 4, 4, 1), jnp.float32)
    loss_fn = make_loss(name)
    for weights in (None, jnp.zeros((2,))):        # also a batch that is all padding
        value, grad = jax.value_and_grad(loss_fn)(logits, targets, weights)
        assert np.isfinite(float(value)), (name, logit, weights)
        assert np.isfinite(np.asarray(grad)).all(), (name, logit, weights)
        if weights is not None:
            assert float(value) == 0.0 and not np.asarray(grad).any()


def test_jit_and_grad_of_the_default_loss():
    loss_fn = jax.jit(make_loss())
    value = loss_fn(LOGITS, TARGETS)
    expected = keras_bce_numpy(LOGITS, TARGETS) + float(jaccard_loss_batch(LOGITS, TARGETS))
    assert float(value) == pytest.approx(expected, rel=1e-5)
    grad = jax.grad(make_loss())(jnp.asarray(LOGITS), TARGETS)
    assert grad.shape == LOGITS.shape and np.isfinite(np.asarray(grad)).all()


def test_unknown_loss_name_lists_the_choices():
    with pytest.raises(ValueError) as err:
        make_loss("bce_jacard")
    for name in LOSS_NAMES:
        assert name in str(err.value)
