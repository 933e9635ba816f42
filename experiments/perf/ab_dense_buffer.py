"""A/B of the bench's train step and inference with DenseNet's dense blocks as written
(each layer concatenates its 32 new channels onto everything before: a copy of the whole
feature map per layer) and with one preallocated buffer per block that each layer writes its
channels into (`lax.dynamic_update_slice`) and reads a prefix of. Same parameters, same
arithmetic. Split over the CPU as bench.py runs them, compiled in one process, timed
interleaved.

    PYTHONPATH=. .venv/bin/python experiments/perf/ab_dense_buffer.py [--batch_size 8] [--repeats 3]
"""
import argparse
import time

from _bench_process import set_up_like_bench, time_sides

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

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.models import hanet  # noqa: E402
from hanet_jax.models.densenet import DenseNet121  # noqa: E402


class Buffered(DenseNet121):
    @nn.compact
    def __call__(self, x, *, train):
        """DenseNet121.__call__ with a per-block feature buffer; the same submodule names."""
        skips = {}
        x = self._stem(x, skips, train)
        for stage, n_layers in enumerate(self.blocks, start=2):
            c0 = x.shape[-1]
            buf = jnp.zeros(x.shape[:-1] + (c0 + n_layers * self.growth_rate,), x.dtype)
            buf = jax.lax.dynamic_update_slice_in_dim(buf, x, 0, axis=3)
            for i in range(1, n_layers + 1):
                c = c0 + (i - 1) * self.growth_rate
                y = self._dense_layer(buf[..., :c], f"conv{stage}_block{i}", train)
                buf = jax.lax.dynamic_update_slice_in_dim(buf, y, c, axis=3)
            x = self._transition(buf, stage, skips, train)
        return self._bn_relu(x, "bn", train), skips


batch = keras_comparison.synthetic_batch(args.batch_size, (256, 256))
sides = {}
for name, encoder in (("concat", DenseNet121), ("buffer", Buffered)):
    hanet.DenseNet121 = encoder  # looked up while tracing, inside _JaxSide
    t0 = time.perf_counter()
    sides[name] = keras_comparison._JaxSide(args.variant, batch)
    hanet.DenseNet121 = DenseNet121
    print(f"compiled {name} in {time.perf_counter() - t0:.0f} s", flush=True)
probs = {k: np.asarray(s.infer(s.variables, s.x)) for k, s in sides.items()}
print(f"inference outputs, max |diff|: {np.abs(probs['concat'] - probs['buffer']).max():.2e}")
time_sides(sides, "concat", args.batch_size, args.repeats)
