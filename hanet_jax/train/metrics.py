"""In-loop training and validation metrics, as clu metric collections.

Loss is the mean of batch losses (validation batches weighted by their real examples, as Keras
does); Dice and IoU at threshold 0.5 come from confusion counts pooled over the whole epoch, not
averaged per batch (a batch without lesions would otherwise count as 0 or NaN). The per-image
metrics of an evaluation are hanet_jax/eval/metrics.py.
"""

from __future__ import annotations

import flax
import jax.numpy as jnp
from clu import metrics as clu_metrics


@flax.struct.dataclass
class _Pooled(clu_metrics.Metric):
    """Confusion counts at logit > 0 (probability > 0.5), summed over batches (int32)."""
    tp: jnp.ndarray
    fp: jnp.ndarray
    fn: jnp.ndarray

    @classmethod
    def from_model_output(cls, *, logits, targets, valid=None, **_):
        pred, gt = logits > 0, targets > 0.5
        keep = jnp.ones(pred.shape[0], bool) if valid is None else valid > 0
        keep = keep.reshape((-1,) + (1,) * (pred.ndim - 1))
        count = lambda x: jnp.sum(x & keep, dtype=jnp.int32)  # noqa: E731
        return cls(tp=count(pred & gt), fp=count(pred & ~gt), fn=count(~pred & gt))

    @classmethod
    def empty(cls):
        zero = jnp.zeros((), jnp.int32)
        return cls(tp=zero, fp=zero, fn=zero)

    def merge(self, other):
        return type(self)(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def _ratio(self, num, den):
        return jnp.where(den > 0, num / jnp.maximum(den, 1), jnp.nan)


@flax.struct.dataclass
class PooledDice(_Pooled):
    def compute(self):
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@flax.struct.dataclass
class PooledIoU(_Pooled):
    def compute(self):
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


@flax.struct.dataclass
class BatchLoss(clu_metrics.Average):
    """A batch loss weighted by the batch's real (non-padding) examples."""

    @classmethod
    def from_model_output(cls, *, loss, valid, **_):
        n = jnp.sum(valid > 0, dtype=jnp.int32)
        return cls(total=loss * n, count=n)


TrainMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average.from_output("loss"), dice=PooledDice, iou=PooledIoU)
EvalMetrics = clu_metrics.Collection.create(loss=BatchLoss, dice=PooledDice, iou=PooledIoU)
