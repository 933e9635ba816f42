"""One benchmark run: parameters, FLOPs, memory and throughput of our HA-Net beside the Keras original.

`run(..., isolate=True)` (what bench.py does) builds each side in its own worker process, set up
as its framework runs alone, and times them in turns from this one; `isolate=False` builds
and times both in this process. The second is what bench.py did until 2026-12-01: there the
two frameworks' thread pools share the process, and the Keras side measured ~20% slower than
alone while ours did not (docs/performance.md, round 10), which flattered the ratios.

* `params`: trainable and non-trainable (BN statistics) counts. Ours come from `jax.eval_shape`
  and the Keras rebuild's from `count_params`.
* `flops`:
  - `jax_forward_gflops`: XLA's cost analysis of the compiled forward pass at batch 1.
  - `jax_train_step_gflops`: XLA's cost analysis of the compiled train step (forward, backward,
    Adam) at the bench batch, divided by the batch.
  - the Keras side at batch 1 (see `hanet_jax.bench.flops`): the TF profiler's count on a frozen
    graph and the release's own conv MAC count. The paper's 8.01 G is reconstructed in
    `paper_style_g`, and the `hanet_jax.bench.flops` docstring explains the 7.93 G / 8.01 G gap.
* `memory`: parameter storage in float32 (`params_mb`). `train_step_peak_mb` is argument +
  output + temp bytes of the compiled train step. With the donated state the outputs alias the
  arguments (`train_step_alias_mb`), so the true peak is nearer that figure minus the alias.
* `throughput`: images/s of the train step and of inference, for ours and for Keras
  (`train_on_batch` with the release's compile; `tf.function(model, jit_compile=False)`).
  Each is warmed up, then timed interleaved (J, K, J, K, ...), and the median of `repeats` is
  taken. Isolated, each call is timed inside its worker, and the idle worker waits on a pipe.
* `peak_matmul_gflops` is this device's float32 matmul rate under XLA, measured in the same run,
  and `peak_matmul_gflops_tf` the same probe under TensorFlow (with Keras); `machine_peak_gflops`
  is the faster of the two. `utilisation` gives both models' achieved FLOP/s, train and
  inference, over the machine peak (`mfu_train` is ours, train), counting XLA's FLOPs for the
  Keras side too (the two compute the same function: the parity tests). These are the direct
  convolutions' FLOPs: on the CPU our 3x3 convs run as Winograd (ops/cpu/winograd.py), with
  2.25-4x fewer multiplications, so ours is direct-equivalent FLOP/s there; and our transition
  layers pool before their 1x1 conv (models/densenet.py), ~0.6 GFLOP per image fewer than
  Keras's order in both counts. `ratio_at_peak` is the largest ratio ours could reach at this
  Keras speed if its every direct FLOP ran at the machine peak.

The JAX train step is the one `train.py` runs (`train.steps.compiled_steps(...).train`): jitted
with the mesh's shardings and the state donated, the release loss (`bce_jaccard`), the release's
Adam (lr 1e-3, eps 1e-9, `train.optimizer.make_tx`) scaled by the plateau, BN statistics updated,
a fresh dropout key each step, and the epoch's pooled metrics.
"""

from __future__ import annotations

import datetime
import functools
import multiprocessing
import os
import platform
import time
import traceback
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hanet_jax.bench import flops as flops_lib
from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu import settings as cpu_settings
from hanet_jax.models.architectures import model_from_config
from hanet_jax.train.keras_callbacks import ReduceLROnPlateau
from hanet_jax.train.optimizer import make_tx
from hanet_jax.train.sharding import batch_sharded, make_mesh, replicated
from hanet_jax.train.state import TrainState
from hanet_jax.train.steps import compiled_steps, make_loss_fn, train_step

MB = 1024 * 1024
# `run(fast_compile=True)`: LLVM optimisation off. Compiles ~1/3 faster on the CPU, with the same
# HLO (so the same cost analysis), but slower code. For tests only: its timings mean nothing.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
LEARNING_RATE, ADAM_EPS = 1e-3, 1e-9  # the release's Adam
LOSS = "bce_jaccard"  # the release's loss


# --------------------------------------------------------------------------- JAX side

def count_leaves(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def fast_init(model, x_shape: Sequence[int], seed: int = 0) -> dict:
    """Variables with the model's tree and realistic scales, without compiling `model.init`.

    Compiling `init` on the CPU takes about as long as compiling the forward pass (~10 s), and
    benchmark numbers do not depend on the values. So the tree comes from `jax.eval_shape`, and
    the leaves are filled in NumPy: kernels are He-normal (fan-in), BN scale and var are 1, biases
    and means are 0, and anything else is N(0, 0.05).
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape), train=False))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        elif name in ("scale", "var"):
            value = np.ones(leaf.shape)
        elif name in ("bias", "mean"):
            value = np.zeros(leaf.shape)
        else:
            value = rng.normal(0.0, 0.05, leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def synthetic_batch(batch_size: int, image_size: Sequence[int], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch_size, *image_size, 3)).astype(np.float32)
    mask = (rng.uniform(size=(batch_size, *image_size, 1)) < 0.3).astype(np.float32)
    return {"image": image, "mask": mask}


def forward_flops(model, variables, x, compiler_options=None) -> float:
    """XLA's FLOP count of the forward pass with XLA's own convs: its cost analysis cannot see
    into the CPU handlers (ops/cpu/conv.py, ops/cpu/winograd.py), so they are off for this
    fresh trace. The direct conv's count, also where the CPU runs Winograd's fewer multiplications."""
    with cpu_settings.disabled():
        counted = jax.jit(lambda v, x: model.apply(v, x, train=False))
        return flops_lib.xla_flops(counted.lower(variables, x).compile(compiler_options))


class _JaxSide:
    """Our model: compiled forward (batch 1 and bench batch) and train step, and their costs."""

    def __init__(self, variant: str, batch: dict, compiler_options: dict | None = None,
                 devices: int | None = None, model_kwargs: dict | None = None,
                 architecture: str = "hanet"):
        fields = {"variant": variant} if architecture == "hanet" else {}
        self.model = model_from_config({"architecture": architecture, **fields, **(model_kwargs or {})})
        x = batch["image"]
        variables = fast_init(self.model, x[:1].shape)
        self.params = (count_leaves(variables["params"]), count_leaves(variables["batch_stats"]))
        self.conv_macs = flops_lib.matmul_macs(
            lambda v, x: self.model.apply(v, x, train=False), variables, x[:1])

        forward = jax.jit(lambda v, x: self.model.apply(v, x, train=False))
        self.forward_flops = forward_flops(self.model, variables, x[:1], compiler_options)
        self.devices = jax.device_count() if devices is None else devices
        self.x = jnp.asarray(x)

        tx = make_tx(LEARNING_RATE, 0.9, 0.999, ADAM_EPS)
        own = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731  (the state is donated)
        params = own(variables["params"])
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           batch_stats=own(variables["batch_stats"]), opt_state=tx.init(params),
                           plateau=ReduceLROnPlateau(learning_rate=LEARNING_RATE).init(),
                           rng=jax.random.PRNGKey(1))
        # FLOPs and memory of the whole batch, from the same step on one device (a sharded
        # executable reports one shard's). XLA's cost analysis does not count the CPU custom calls
        # (ops/cpu/conv.py, ops/cpu/winograd.py): there the direct convs' arithmetic is counted on a
        # fresh XLA-only trace (a new jit of the same step).
        # The timed step: the one train.py runs, on its mesh (all devices, or the bench's split of
        # the CPU), the state replicated and donated, the batch sharded.
        loss_fn = make_loss_fn(LOSS)
        one = jax.devices()[0]
        state1, batch1 = jax.device_put(state, one), jax.device_put(batch, one)
        mesh = make_mesh(jax.devices()[:self.devices])
        repl, data = replicated(mesh), batch_sharded(mesh)
        self.variables, self.x = jax.device_put(variables, repl), jax.device_put(self.x, data)
        self.state = jax.device_put(state, repl)
        self.batch = jax.device_put(jax.tree_util.tree_map(jnp.asarray, batch), data)
        self.train = compiled_steps(self.model, LOSS, tx, mesh).train.lower(
            self.state, self.batch).compile(compiler_options)
        # On one device that program is the whole batch's; a sharded one reports one shard's, so
        # the same step is then compiled for one device too.
        one_device = self.train if self.devices == 1 else jax.jit(
            functools.partial(train_step, model=self.model, loss_fn=loss_fn, tx=tx)).lower(
                state1, batch1).compile(compiler_options)
        self.memory = flops_lib.memory_bytes(one_device)
        self.train_flops = flops_lib.xla_flops(one_device)
        if cpu_conv.active():
            with cpu_settings.disabled():  # a fresh jit of the same step: a new trace
                xla_step = jax.jit(functools.partial(train_step, model=self.model, loss_fn=loss_fn, tx=tx))
                self.train_flops = flops_lib.xla_flops(xla_step.lower(state1, batch1).compile(compiler_options))
        self.infer = jax.jit(forward, in_shardings=(repl, data), out_shardings=data).lower(
            self.variables, self.x).compile(compiler_options)

    def summary(self) -> dict:
        """What `run` reports of this side besides its timings."""
        return {"params": self.params, "forward_flops": self.forward_flops, "train_flops": self.train_flops,
                "forward_macs": self.conv_macs, "memory": self.memory, "devices": self.devices, "device": device_info()}

    def train_once(self):
        self.state, metrics = self.train(self.state, self.batch)
        jax.block_until_ready((self.state, metrics))

    def infer_once(self):
        self.infer(self.variables, self.x).block_until_ready()


# --------------------------------------------------------------------------- Keras side

def keras_release_loss(y_true, y_pred):
    """The release's loss: Keras `binary_crossentropy` + Jaccard over the whole batch flattened."""
    from keras import losses, ops

    inter = ops.sum(y_true * y_pred)
    jaccard = 1.0 - inter / (ops.sum(y_true) + ops.sum(y_pred) - inter)
    return losses.binary_crossentropy(y_true, y_pred) + jaccard


class _KerasSide:
    """Our Keras rebuild of the release, compiled as the release compiles it."""

    def __init__(self, variant: str, batch: dict):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras
        import tensorflow as tf

        from hanet_jax.reference.keras_original import build_keras_hanet, count_params

        size = batch["image"].shape[1:]
        self.model = build_keras_hanet(variant, size)
        self.params = count_params(self.model)
        self.costs = flops_lib.keras_cost_breakdown(self.model, size)
        self.model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE, epsilon=ADAM_EPS), loss=keras_release_loss)
        self.x, self.y = tf.constant(batch["image"]), tf.constant(batch["mask"])
        self.forward = tf.function(self.model, jit_compile=False)

    def summary(self) -> dict:
        return {"params": self.params, "costs": self.costs}

    def train_once(self):
        self.model.train_on_batch(self.x, self.y)

    def infer_once(self):
        self.forward(self.x, training=False).numpy()


# --------------------------------------------------------------------------- timing and report

def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                        timer: Callable[[Callable[[], Any]], float] = _time) -> dict[str, float]:
    """Median seconds per call of each fn, timed in turns (a, b, a, b, ...) after `warmup` calls.
    `timer(fn)` gives one call's seconds (by default the wall time around it here)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            times[name].append(timer(fn))
    return {k: float(np.median(v)) for k, v in times.items()}


# --------------------------------------------------------------------------- isolated sides

def _peak(kind: str, matmul_n: int, repeats: int) -> float:
    """The matmul probe of that side's framework, GFLOP/s."""
    probe = flops_lib.peak_matmul_gflops if kind == "jax" else flops_lib.tf_peak_matmul_gflops
    return probe(matmul_n, repeats=repeats)


def _side_worker(kind: str, spec: dict, conn) -> None:
    """One side of the bench in its own process: set up as its framework runs alone, built, then
    answering "train" / "infer" (seconds of one call, timed here) and "peak" (GFLOP/s)."""
    try:
        from hanet_jax.ops.cpu import devices as cpu_devices
        from hanet_jax.ops.cpu import host_memory

        host_memory.keep_freed_host_memory_if_cpu_only()  # as before: both sides get it
        batch = synthetic_batch(spec["batch_size"], spec["size"])
        if kind == "jax":
            cpu_devices.split_cpu_if_cpu_only(spec["batch_size"])
            side = _JaxSide(spec["variant"], batch, spec["compiler_options"],
                            model_kwargs=spec["model_kwargs"], architecture=spec["architecture"])
        else:
            side = _KerasSide(spec["variant"], batch)
        conn.send(("ok", {**side.summary(), "pid": os.getpid()}))
        while (command := conn.recv()) != "stop":
            conn.send(("ok", _peak(kind, spec["matmul_n"], spec["peak_repeats"]) if command == "peak"
                       else _time(getattr(side, f"{command}_once"))))
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class _Worker:
    """The parent's handle on one `_side_worker` process."""

    def __init__(self, kind: str, spec: dict):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this process's JAX
        self.kind, (self.conn, child) = kind, ctx.Pipe()
        self.process = ctx.Process(target=_side_worker, args=(kind, spec, child), daemon=True,
                                   name=f"bench-{kind}")
        self.process.start()
        child.close()

    def ask(self, command: str | None = None):
        """Sends `command` (None: only waits for the worker to be built) and returns its answer."""
        if command is not None:
            self.conn.send(command)
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.process.join(timeout=10)
            raise RuntimeError(f"bench: the {self.kind} side's process died "
                               f"(exit code {self.process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"bench: the {self.kind} side failed in its process:\n{value}")
        return value

    def close(self):
        try:
            self.conn.send("stop")
        except OSError:
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def efficiency(gflops_per_image: dict[str, float], throughput: dict[str, float | None], peak: float
               ) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(utilisation, ratio_at_peak) for kinds "train"/"infer" (see the module docstring):
    utilisation["{jax,keras}_{kind}"] = GFLOP/image x images/s / peak GFLOP/s, and
    ratio_at_peak[kind] = (peak / GFLOP/image) / Keras images/s; None where Keras was not run."""
    utilisation, ratio_at_peak = {}, {}
    for kind, gflops in gflops_per_image.items():
        for side in ("jax", "keras"):
            img_s = throughput.get(f"{side}_{kind}_img_s")
            utilisation[f"{side}_{kind}"] = None if img_s is None else gflops * img_s / peak
        ratio_at_peak[kind] = _ratio(peak / gflops, throughput.get(f"keras_{kind}_img_s"))
    return utilisation, ratio_at_peak


def device_info() -> dict[str, Any]:
    dev = jax.devices()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": dev.platform, "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "cpu_count": cpus, "machine": platform.machine(), "jax": jax.__version__}


def run(variant: str = "full", batch_size: int = 8, image_size: int | Sequence[int] = 256, repeats: int = 5,
        keras: bool = True, matmul_n: int = 2048, command: str = "", fast_compile: bool = False,
        isolate: bool = False, model_kwargs: dict | None = None,
        architecture: str = "hanet") -> dict[str, Any]:
    """Measure one setting; returns the JSON-able result (see the module doc for the fields).
    `model_kwargs` go to our model (tests: a tiny encoder); `architecture` other than "hanet"
    measures a baseline (models/architectures.py), which has no Keras original."""
    if architecture != "hanet" and keras:
        raise ValueError(f"architecture {architecture!r} has no Keras original: pass keras=False")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    compiler_options = FAST_COMPILE_OPTIONS if fast_compile else None
    peak_repeats = max(3, repeats)
    kinds = ("jax", "keras") if keras else ("jax",)
    if isolate:
        spec = {"variant": variant, "architecture": architecture, "batch_size": batch_size, "size": size, "compiler_options": compiler_options,
                "model_kwargs": model_kwargs, "matmul_n": matmul_n, "peak_repeats": peak_repeats}
        workers: dict[str, _Worker] = {}
        try:
            for kind in kinds:  # both build at once; nothing is timed until both are ready
                workers[kind] = _Worker(kind, spec)
            info = {kind: w.ask() for kind, w in workers.items()}
            fns = {f"{kind}_{call}": functools.partial(workers[kind].ask, call)
                   for call in ("train", "infer") for kind in kinds}
            seconds = interleaved_medians(fns, repeats, timer=lambda fn: fn())  # timed in the worker
            peaks = {kind: w.ask("peak") for kind, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
    else:
        batch = synthetic_batch(batch_size, size)
        sides = {"jax": _JaxSide(variant, batch, compiler_options, model_kwargs=model_kwargs,
                                 architecture=architecture)}
        if keras:
            sides["keras"] = _KerasSide(variant, batch)
        fns = {f"{kind}_{call}": getattr(sides[kind], f"{call}_once") for call in ("train", "infer") for kind in kinds}
        seconds = interleaved_medians(fns, repeats)
        peaks = {kind: _peak(kind, matmul_n, peak_repeats) for kind in kinds}
        info = {kind: side.summary() for kind, side in sides.items()}
    ours, theirs = info["jax"], info.get("keras")
    img_s = {k: batch_size / v for k, v in seconds.items()}
    peak, peak_tf = peaks["jax"], peaks.get("keras")
    machine_peak = max(peak, peak_tf or 0.0)

    train_gflops = ours["train_flops"] / batch_size / 1e9
    costs = theirs["costs"] if theirs else {}
    mem = ours["memory"]
    throughput = {
        "jax_train_img_s": img_s["jax_train"], "keras_train_img_s": img_s.get("keras_train"),
        "jax_infer_img_s": img_s["jax_infer"], "keras_infer_img_s": img_s.get("keras_infer"),
    }
    throughput["ratio_train"] = _ratio(throughput["jax_train_img_s"], throughput["keras_train_img_s"])
    throughput["ratio_infer"] = _ratio(throughput["jax_infer_img_s"], throughput["keras_infer_img_s"])
    forward_gflops = ours["forward_flops"] / 1e9
    utilisation, ratio_at_peak = efficiency({"train": train_gflops, "infer": forward_gflops}, throughput,
                                           machine_peak)
    trainable, non_trainable = ours["params"]
    return {
        "setting": {"architecture": architecture, "variant": variant, "batch_size": batch_size, "image_size": list(size), "repeats": repeats,
                    "keras": keras, "fast_compile": fast_compile, "jax_devices": ours["devices"],
                    "isolated": isolate, "pids": {k: v.get("pid", os.getpid()) for k, v in info.items()}},
        "params": {"trainable": trainable, "non_trainable": non_trainable},
        "params_keras": ({"trainable": theirs["params"][0], "non_trainable": theirs["params"][1]}
                         if theirs else None),
        "flops": {
            "jax_forward_gflops": forward_gflops,
            "jax_forward_conv_gmacs": ours["forward_macs"] / 1e9,
            "jax_train_step_gflops": train_gflops,
            "keras_profiler_forward_gflops": costs.get("keras_profiler_forward_gflops"),
            "keras_conv_macs_g": costs.get("keras_conv_macs_g"),
            "keras_breakdown": costs or None,
        },
        "memory": {
            "params_mb": 4 * (trainable + non_trainable) / MB,
            "train_step_peak_mb": (mem["argument"] + mem["output"] + mem["temp"]) / MB if mem else None,
            "train_step_alias_mb": mem["alias"] / MB if mem else None,
            "train_step_bytes": mem,
        },
        "throughput": throughput,
        "seconds_per_batch": seconds,
        "peak_matmul_gflops": peak,
        "peak_matmul_gflops_tf": peak_tf,
        "machine_peak_gflops": machine_peak,
        "matmul_n": matmul_n,
        "mfu_train": utilisation["jax_train"],
        "utilisation": utilisation,
        "ratio_at_peak": ratio_at_peak,
        "device": ours["device"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def markdown_table(r: dict) -> str:
    """The result as a markdown table (ours | Keras original | ours / Keras)."""
    s, f, m, t, u = r["setting"], r["flops"], r["memory"], r["throughput"], r["utilisation"]
    pk = r["params_keras"] or {}
    rows = [
        ("trainable params", f"{r['params']['trainable']:,}", _fmt(pk.get("trainable"), ","), ""),
        ("non-trainable params", f"{r['params']['non_trainable']:,}", _fmt(pk.get("non_trainable"), ","), ""),
        ("forward GFLOPs (batch 1)", f"{f['jax_forward_gflops']:.2f} (XLA)",
         f"{_fmt(f['keras_profiler_forward_gflops'])} (TF profiler)", ""),
        ("conv + matmul GMACs (batch 1)", _fmt(f.get("jax_forward_conv_gmacs")), _fmt(f["keras_conv_macs_g"]) + " (release count)", ""),
        ("GSA's convs too, as MACs, + non-conv FLOPs (the paper's 8.01 G)", "",
         _fmt((f.get("keras_breakdown") or {}).get("paper_style_g")), ""),
        ("train step GFLOPs / image", f"{f['jax_train_step_gflops']:.2f} (XLA)", "", ""),
        ("params MB (float32)", f"{m['params_mb']:.2f}", "", ""),
        ("train step peak MB (arg+out+temp)", _fmt(m["train_step_peak_mb"], ".0f"), "", ""),
        (f"train images/s (batch {s['batch_size']})", f"{t['jax_train_img_s']:.2f}", _fmt(t["keras_train_img_s"]),
         _fmt(t["ratio_train"])),
        (f"inference images/s (batch {s['batch_size']})", f"{t['jax_infer_img_s']:.2f}",
         _fmt(t["keras_infer_img_s"]), _fmt(t["ratio_infer"])),
        ("peak matmul GFLOP/s (f32, 2048³)", f"{r['peak_matmul_gflops']:.1f}", _fmt(r["peak_matmul_gflops_tf"], ".1f"), ""),
        *[(f"{kind} FLOP/s of the machine's matmul peak", _pct(u[f"jax_{kind}"]), _pct(u[f"keras_{kind}"]), "")
          for kind in ("train", "infer")],
        *[(f"{kind}: ratio if ours ran at that peak", "", "", _fmt(r["ratio_at_peak"][kind]))
          for kind in ("train", "infer")],
    ]
    d = r["device"]
    network = (f"HA-Net `{s['variant']}`" if s.get("architecture", "hanet") == "hanet"
               else f"`{s['architecture']}`")
    head = (f"{network} at {s['image_size'][0]}x{s['image_size'][1]}, batch {s['batch_size']}, "
            f"median of {s['repeats']}; {d['platform']} ({d['device_kind']}, {d['cpu_count']} CPUs), {r['date']}")
    if s.get("jax_devices", 1) > 1:
        head += f"; ours data-parallel over {s['jax_devices']} XLA devices"
    head += "; each side in its own process" if s.get("isolated") else "; both sides in one process"
    lines = [head, "", "| metric | ours (JAX) | Keras original | ours / Keras |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    return "\n".join(lines)
