"""Round 16: the 3x3 SAME convs that read a nearest 2x upsampling (SFEB's conv, the head's
conv), as now (upsample, then Winograd on the large map) and as the sub-pixel form: one 3x3 conv
of the small map to 4F channels (the four output phases, whose kernels sum the taps that fall
on the same source pixel), then depth-to-space. Batch 4 (a device's share), one core, medians
of interleaved calls; the difference from the direct conv of the upsampled map is printed.

    PYTHONPATH=. taskset -c 0 .venv/bin/python experiments/perf/subpixel_shapes.py [--repeats 7]
"""
import argparse

from hanet_jax.ops.cpu import host_memory

host_memory.keep_freed_host_memory_if_cpu_only()
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402
from hanet_jax.ops import upsample2x  # noqa: E402
from hanet_jax.ops.cpu import conv as cpu_conv  # noqa: E402
from hanet_jax.ops.cpu import winograd  # noqa: E402

# (small map, C in, C out): the SFEB convs of dec1..dec4 and the head's conv, at 256x256.
SHAPES = [(8, 256, 256), (16, 256, 256), (32, 128, 128), (64, 64, 64), (128, 32, 16)]

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=4)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()
rng = np.random.default_rng(0)
R = np.zeros((2, 3, 3), np.float32)  # [phase, tap offset -1/0/+1 on the small map, kernel row]
R[0, 0, 0] = R[0, 1, 1] = R[0, 1, 2] = 1
R[1, 1, 0] = R[1, 1, 1] = R[1, 2, 2] = 1


def subpixel(x, k, m):
    c, f = k.shape[2:]
    k4 = jnp.einsum("apk,bql,klcf->pqcabf", R, R, k).reshape(3, 3, c, 4 * f)
    y = winograd.conv(x, k4, m) if m else cpu_conv._xla_conv(x, k4)
    b, h, w, _ = y.shape
    return y.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, f)


def now(x, k):
    return cpu_conv.conv3x3(upsample2x(x), k)


tot = {}
for hw, c, f in SHAPES:
    x = jnp.asarray(rng.standard_normal((args.batch_size, hw, hw, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, c, f)) / np.sqrt(9 * c), jnp.float32)
    ref = cpu_conv._xla_conv(upsample2x(x), k)
    fns = {"now": jax.jit(now)}
    for m in (2, 4):
        if hw % m == 0:
            fns[f"sub m{m}"] = jax.jit(lambda x, k, m=m: subpixel(x, k, m))
    line = []
    calls = {}
    for name, fn in fns.items():
        out = fn(x, k).block_until_ready()
        d = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
        calls[name] = lambda fn=fn: fn(x, k).block_until_ready()
        line.append(f"{name} diff {d:.1e}")
    sec = keras_comparison.interleaved_medians(calls, args.repeats)
    for name, s in sec.items():
        tot[name] = tot.get(name, 0) + s
    print(f"{hw}x{hw} -> {2 * hw}, {c}->{f}: " + ", ".join(f"{n} {1e3 * s:.2f} ms" for n, s in sec.items())
          + "; " + ", ".join(line), flush=True)
print("sums:", ", ".join(f"{n} {1e3 * s:.1f} ms" for n, s in tot.items() if n != "sub m2" or True))
