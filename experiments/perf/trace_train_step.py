"""Per-XLA-op time of the bench train step on the CPU, from a `jax.profiler` trace (parsed with
TensorFlow's xplane proto, which the Keras side already installs).

    PYTHONPATH=. .venv/bin/python experiments/perf/trace_train_step.py [--batch_size 8] [--top 40]

The CPU is split into devices as bench.py and train.py split it (`hanet_jax/ops/cpu/devices.py`;
HANET_CPU_DEVICES=1 profiles one device). Per trace line (a device's thunk executor or an
XLA worker thread) it prints the busy time, so a device waiting on the other shows as a line
busy for much less than the step's wall time.
"""
import argparse
import collections
import glob
import os
import tempfile
import time

from _bench_process import set_up_like_bench

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--top", type=int, default=40)
parser.add_argument("--infer", action="store_true")
args = parser.parse_args()
set_up_like_bench(args.batch_size)

import jax  # noqa: E402

from hanet_jax.bench import keras_comparison  # noqa: E402

side = keras_comparison._JaxSide("full", keras_comparison.synthetic_batch(args.batch_size, (256, 256)))
fn = side.infer_once if args.infer else side.train_once
fn()
d = tempfile.mkdtemp()
with jax.profiler.trace(d):
    t0 = time.perf_counter()
    fn()
    wall_ms = 1e3 * (time.perf_counter() - t0)
print(f"{jax.device_count()} device(s); traced call {wall_ms:.0f} ms wall")
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

space = xplane_pb2.XSpace()
space.ParseFromString(open(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0], "rb").read())
tot = collections.Counter()
cnt = collections.Counter()
for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
        for ev in line.events:
            n = names.get(ev.metadata_id, "?")
            tot[(plane.name, line.name, n)] += ev.duration_ps / 1e9
            cnt[(plane.name, line.name, n)] += 1
busy = collections.Counter()
for (p, l, n), ms in tot.items():
    if not p.startswith("/host:python"):
        busy[(p, l)] += ms
print("busy per trace line (sum of its events; nested events count twice):")
for (p, l), ms in busy.most_common(12):
    print(f"{ms:9.1f} ms  {p[:20]:20s} {l[:40]}")
for (p, l, n), ms in tot.most_common(args.top):
    print(f"{ms:9.1f} ms  x{cnt[(p, l, n)]:<4d} {p[:20]:20s} {l[:24]:24s} {n[:110]}")

# Map the top fusions to their HLO (the fusion instruction line in the compiled module).
hlo = (side.infer if args.infer else side.train).as_text()
lines = hlo.splitlines()
print("\nTop thunks and their HLO:")
thunks = [(ms, n) for (p, l, n), ms in tot.most_common() if l.startswith("tf_XLAEigen")]
by_name = collections.Counter()
for ms, n in thunks:
    by_name[n] += ms
kinds = collections.Counter()
for n, ms in by_name.items():
    kinds[n.rstrip("0123456789.")] += ms
print("by kind:", {k: round(v) for k, v in kinds.most_common(12)})
for n, ms in by_name.most_common(args.top // 2):
    inst = next((ln.strip() for ln in lines if ln.strip().startswith(f"%{n} =") or ln.strip().startswith(f"{n} =")), "?")
    print(f"{ms:8.1f} ms  {inst[:400]}")
