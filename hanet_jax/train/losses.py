"""Segmentation losses on LOGITS (the model returns logits; sigmoid is applied here).

Shapes: logits and targets (B, H, W, 1) (any (B, ...) works); targets are {0, 1} floats.
`weights`, optional, shape (B,): per-example weight, 0 for padded examples, which then add
nothing to any sum or mean. When every weight is 0 the loss is 0 (and so is its gradient).

Every loss here is finite, with finite gradients, on empty masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import jax
import jax.numpy as jnp
import optax

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): Keras clips probabilities to [eps, 1 - eps]

LossFn = Callable[..., jax.Array]  # (logits, targets, weights=None) -> scalar


def _check(logits, targets):
    if jnp.shape(logits) != jnp.shape(targets):
        raise ValueError(f"logits {jnp.shape(logits)} and targets {jnp.shape(targets)} must have one shape")


def _per_image_mean(x):
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _per_image_sum(x):
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def _weights(weights, batch: int):
    if weights is None:
        return jnp.ones((batch,), jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if weights.shape != (batch,):
        raise ValueError(f"weights must have shape ({batch},), got {weights.shape}")
    return weights


def _safe_div(num, den):
    """num / den where den > 0, else 0; the double `where` keeps the gradient finite too."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _weighted_mean(per_image, weights):
    """Σ w_b·l_b / Σ w_b over the batch (0 when all weights are 0)."""
    w = _weights(weights, per_image.shape[0])
    return _safe_div(jnp.sum(w * per_image), jnp.sum(w))


def _pixel_bce(logits, targets, keras_clip: bool):
    if keras_clip:
        p = jnp.clip(jax.nn.sigmoid(logits), KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        return -(targets * jnp.log(p) + (1.0 - targets) * jnp.log(1.0 - p))
    # -[y·log σ(x) + (1-y)·log(1-σ(x))] in optax's stable log-sigmoid form
    return optax.sigmoid_binary_cross_entropy(logits, targets)


def bce_with_logits(logits, targets, weights=None, *, keras_clip: bool = False):
    """Binary cross-entropy, mean over pixels (then weighted mean over the batch).

    Default: the exact, stable log-sigmoid form. keras_clip=True reproduces Keras'
    `binary_crossentropy` on sigmoid(logits) as its JAX backend computes it, with
    probabilities clipped to [1e-7, 1 - 1e-7] (in float32 the upper bound is 1 - 2^-23): the
    per-pixel loss is capped near 16 and its gradient is zero where |logit| > ~16. The two agree away from saturation. (Keras' TensorFlow
    backend recovers the logits of a sigmoid output and uses the unclipped form in training.)
    """
    _check(logits, targets)
    return _weighted_mean(_per_image_mean(_pixel_bce(logits, targets, keras_clip)), weights)


def _jaccard_sums(logits, targets):
    """Per-image Σ(y·p) and Σy + Σp - Σ(y·p), with p = sigmoid(logits)."""
    _check(logits, targets)
    p = jax.nn.sigmoid(logits)
    inter = _per_image_sum(targets * p)
    return inter, _per_image_sum(targets) + _per_image_sum(p) - inter


def jaccard_loss_batch(logits, targets, weights=None):
    """The release's soft Jaccard loss, over the WHOLE batch flattened, no smoothing:

        1 - Σ(y·p) / (Σy + Σp - Σ(y·p)),   sums over every pixel of every (weighted) example.

    The denominator equals Σ(p + y(1 - p)) >= Σp > 0 in exact arithmetic since p = sigmoid > 0,
    so empty masks are fine. In float32 sigmoid underflows to 0 below a logit of about -104;
    should every pixel be that negative with an all-empty target (or every weight be 0), the
    release would return NaN; here the loss is defined as 0 (a perfect empty prediction).
    """
    w = _weights(weights, logits.shape[0])
    inter, union = _jaccard_sums(logits, targets)
    inter, union = jnp.sum(w * inter), jnp.sum(w * union)
    return jnp.where(union > 0, 1.0 - _safe_div(inter, union), 0.0)


def jaccard_loss_per_image(logits, targets, weights=None):
    """Mean over images of 1 - Σ(y·p) / (Σy + Σp - Σ(y·p)), sums per image, no smoothing.

    On an empty target the image's loss is 1 whatever the prediction (Σ(y·p) = 0), so it has no
    gradient: per-image Jaccard cannot teach "predict nothing". A 0/0 image (see
    `jaccard_loss_batch`) counts as 0.
    """
    inter, union = _jaccard_sums(logits, targets)
    per_image = jnp.where(union > 0, 1.0 - _safe_div(inter, union), 0.0)
    return _weighted_mean(per_image, weights)


def dice_loss(logits, targets, weights=None, *, smooth: float = 1.0):
    """Mean over images of 1 - (2Σ(y·p) + s) / (Σy + Σp + s), sums per image, s = `smooth`.

    The smoothing keeps an empty target finite and still trainable (the loss then pushes Σp
    towards 0).
    """
    _check(logits, targets)
    p = jax.nn.sigmoid(logits)
    inter = _per_image_sum(targets * p)
    per_image = 1.0 - (2.0 * inter + smooth) / (_per_image_sum(targets) + _per_image_sum(p) + smooth)
    return _weighted_mean(per_image, weights)


def focal_loss(logits, targets, weights=None, *, gamma: float = 2.0, alpha: Optional[float] = None):
    """Focal loss (Lin et al. 2017), mean over pixels then weighted mean over the batch:

        FL = -α_t (1 - p_t)^γ log p_t,   p_t = p if y = 1 else 1 - p,
        α_t = α·y + (1 - α)(1 - y), or 1 when alpha is None.

    log p_t is the stable BCE term, so FL = α_t (1 - exp(-bce))^γ · bce.
    """
    _check(logits, targets)
    bce = _pixel_bce(logits, targets, keras_clip=False)
    # gamma = 0 is plain BCE; skipping the power also avoids 0**0's NaN gradient.
    loss = bce if gamma == 0 else (-jnp.expm1(-bce)) ** gamma * bce
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return _weighted_mean(_per_image_mean(loss), weights)


def _sum_of(*terms: LossFn) -> LossFn:
    def loss(logits, targets, weights=None):
        return sum(term(logits, targets, weights) for term in terms)
    return loss


LOSS_NAMES = ("bce_jaccard", "bce", "bce_jaccard_per_image", "bce_dice", "focal_dice")


def make_loss(name: str = "bce_jaccard", *, keras_clip: bool = False, dice_smooth: float = 1.0,
              focal_gamma: float = 2.0, focal_alpha: Optional[float] = None) -> LossFn:
    """The training loss `name` as fn(logits, targets, weights=None) -> scalar.

    bce_jaccard            BCE + Jaccard over the whole batch: the release (default)
    bce                    BCE alone
    bce_jaccard_per_image  BCE + mean per-image Jaccard
    bce_dice               BCE + per-image Dice (smoothed by dice_smooth)
    focal_dice             focal (focal_gamma, focal_alpha) + per-image Dice
    """
    def bce(lg, y, w=None):
        return bce_with_logits(lg, y, w, keras_clip=keras_clip)

    def dice(lg, y, w=None):
        return dice_loss(lg, y, w, smooth=dice_smooth)

    def focal(lg, y, w=None):
        return focal_loss(lg, y, w, gamma=focal_gamma, alpha=focal_alpha)

    losses = {
        "bce_jaccard": _sum_of(bce, jaccard_loss_batch),
        "bce": bce,
        "bce_jaccard_per_image": _sum_of(bce, jaccard_loss_per_image),
        "bce_dice": _sum_of(bce, dice),
        "focal_dice": _sum_of(focal, dice),
    }
    assert tuple(losses) == LOSS_NAMES
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")
    return losses[name]


def deep_supervision_loss(loss_fn: LossFn, logits: jax.Array, aux_logits, targets: jax.Array
                          ) -> jax.Array:
    """nnU-Net's deep supervision: `loss_fn` on the full-resolution logits and on each coarser
    stage's (`aux_logits`, coarsest first), each against the mask resized to that stage
    (nearest), with weights halving per stage away from full resolution (1, 1/2, 1/4, ...),
    normalised to sum to 1."""
    stages = [logits, *reversed(list(aux_logits))]  # finest first
    weights = [0.5 ** i for i in range(len(stages))]
    total = 0.0
    for weight, stage in zip(weights, stages):
        target = targets
        if stage.shape[1:3] != targets.shape[1:3]:
            target = jax.image.resize(targets, targets.shape[:1] + stage.shape[1:3]
                                      + targets.shape[3:], method="nearest")
        total = total + weight * loss_fn(stage, target)
    return total / sum(weights)
