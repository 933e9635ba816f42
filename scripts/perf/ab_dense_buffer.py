"""A/B of the bench's train step and inference with DenseNet's dense blocks as written
(each layer concatenates its 32 new channels onto everything before: a copy of the whole
feature map per layer) and with one preallocated buffer per block that each layer writes its
channels into (`lax.dynamic_update_slice`) and reads a prefix of. Same parameters, same
arithmetic. Split over the CPU as bench.py runs them, compiled in one process, timed
interleaved.

    PYTHONPATH=. .venv/bin/python scripts/perf/ab_dense_buffer.py [--batch_size 8] [--repeats 3]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench_process import set_up_like_bench  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--variant", default="full")
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax import bench_lib  # noqa: E402
from hanet_jax.models import hanet  # noqa: E402
from hanet_jax.models.densenet import DenseNet121  # noqa: E402
from hanet_jax.models.layers import Conv, batch_norm  # noqa: E402


class Buffered(DenseNet121):
    @nn.compact
    def __call__(self, x, *, train):
        """DenseNet121.__call__ with a per-block feature buffer; the same submodule names."""
        skips = {}
        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
        x = Conv(64, 7, strides=2, padding="VALID", use_bias=False, dtype=self.dtype, name="conv1_conv")(x)
        x = batch_norm("conv1_bn", train=train, epsilon=self.epsilon, dtype=self.dtype)(x)
        skips["conv1_bn"] = x
        x = nn.relu(x)
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        skips["pool1"] = x
        for stage, n_layers in enumerate(self.blocks, start=2):
            c0 = x.shape[-1]
            buf = jnp.zeros(x.shape[:-1] + (c0 + n_layers * self.growth_rate,), x.dtype)
            buf = jax.lax.dynamic_update_slice_in_dim(buf, x, 0, axis=3)
            for i in range(1, n_layers + 1):
                prefix, c = f"conv{stage}_block{i}", c0 + (i - 1) * self.growth_rate
                y = self._bn_relu(buf[..., :c], f"{prefix}_0_bn", train)
                y = Conv(4 * self.growth_rate, 1, use_bias=False, dtype=self.dtype, name=f"{prefix}_1_conv")(y)
                y = self._bn_relu(y, f"{prefix}_1_bn", train)
                y = Conv(self.growth_rate, 3, use_bias=False, dtype=self.dtype, name=f"{prefix}_2_conv")(y)
                buf = jax.lax.dynamic_update_slice_in_dim(buf, y, c, axis=3)
            x = buf
            if stage < 1 + len(self.blocks):
                x = self._bn_relu(x, f"pool{stage}_bn", train)
                x = Conv(x.shape[-1] // 2, 1, use_bias=False, dtype=self.dtype, name=f"pool{stage}_conv")(x)
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
                skips[f"pool{stage}_pool"] = x
        return self._bn_relu(x, "bn", train), skips


batch = bench_lib.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name, encoder in (("concat", DenseNet121), ("buffer", Buffered)):
    hanet.DenseNet121 = encoder  # looked up while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[name] = bench_lib._JaxSide(args.variant, batch)
    hanet.DenseNet121 = DenseNet121
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
probs = {k: np.asarray(s.infer(s.variables, s.x)) for k, s in sides.items()}
print(f"inference outputs, max |diff|: {np.abs(probs['concat'] - probs['buffer']).max():.2e}")
fns = {f"{k} {kind}": getattr(s, f"{kind}_once") for kind in ("train", "infer") for k, s in sides.items()}
sec = bench_lib.interleaved_medians(fns, args.repeats)
for k, v in sec.items():
    kind = k.split()[-1]
    print(f"{k:16s} {1e3 * v:8.0f} ms/batch  {args.batch_size / v:6.2f} img/s  "
          f"speed-up vs concat: {sec[f'concat {kind}'] / v:.2f}x")
