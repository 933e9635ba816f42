"""3x3 conv fwd+bwd under the current process's XLA_FLAGS (run it under several settings, A B A B,
since the flags are process-wide). E.g. YNNPACK convs vs Eigen convs:

    for f in "" "--xla_cpu_experimental_ynn_fusion_type=individual_dot" "" "--xla_cpu_experimental_ynn_fusion_type=individual_dot"; do
      XLA_FLAGS="$f" PYTHONPATH=. .venv/bin/python experiments/perf/xla_flags_conv.py; done
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


rng = np.random.default_rng(0)
out = []
for b, h, c, f in [(8, 64, 128, 128), (8, 64, 128, 32), (8, 128, 64, 64), (8, 256, 32, 16), (8, 32, 384, 128)]:
    x = jnp.asarray(rng.normal(size=(b, h, h, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, c, f)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(b, h, h, f)), jnp.float32)
    fwd = jax.jit(conv)
    bwd = jax.jit(lambda x, k: jax.vjp(conv, x, k)[1](g))
    ts = {"fwd": [], "bwd": []}
    for fn, name in ((lambda: fwd(x, k), "fwd"), (lambda: bwd(x, k), "bwd")):
        jax.block_until_ready(fn())
        for _ in range(5):
            t0 = time.perf_counter(); jax.block_until_ready(fn()); ts[name].append(time.perf_counter() - t0)
    out.append(f"{h}x{h} {c}->{f}: fwd {1e3 * np.median(ts['fwd']):6.1f} bwd {1e3 * np.median(ts['bwd']):6.1f} ms")
print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n  " + "\n  ".join(out))
