"""The stem conv's weight gradient alone (7x7/2, 3->64, 256x256 input), with freed host memory
kept mapped as bench.py runs: is it worth a custom kernel? XLA's vs an im2col GEMM, and the
forward for scale, per device shard (batch 4 of bench's 8 on two devices).

    PYTHONPATH=. XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 1 \
        .venv/bin/python experiments/perf/stem_weight_grad.py --batch 4
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()  # before JAX allocates anything

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import report_interleaved  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=4)
p.add_argument("--repeats", type=int, default=10)
args = p.parse_args()

rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(args.batch, 262, 262, 3)), jnp.float32)  # after ZeroPadding2D(3)
k = jnp.asarray(rng.normal(size=(7, 7, 3, 64)), jnp.float32)
dy = jnp.asarray(rng.normal(size=(args.batch, 128, 128, 64)), jnp.float32)


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches(x):  # (B, 128, 128, 147), taps in (i, j, c) order like the HWIO kernel
    return jnp.concatenate([x[:, i:i + 255:2, j:j + 255:2, :] for i in range(7) for j in range(7)], -1)


xla_dw = jax.jit(lambda x, dy: jax.vjp(lambda k_: conv(x, k_), k)[1](dy)[0])
im2col_dw = jax.jit(lambda x, dy: jnp.einsum("bhwp,bhwf->pf", patches(x), dy).reshape(k.shape))
fwd = jax.jit(conv)
ref = xla_dw(x, dy)
print(f"im2col vs XLA dK: max rel diff {float(jnp.abs(im2col_dw(x, dy) - ref).max() / jnp.abs(ref).max()):.1e}")
report_interleaved({
    f"XLA dK, batch {args.batch}": lambda: jax.block_until_ready(xla_dw(x, dy)),
    f"im2col dK, batch {args.batch}": lambda: jax.block_until_ready(im2col_dw(x, dy)),
    f"XLA forward, batch {args.batch}": lambda: jax.block_until_ready(fwd(x, k)),
}, repeats=args.repeats)
