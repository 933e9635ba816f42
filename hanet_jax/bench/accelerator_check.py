"""`hanet-check-accelerator`: does HA-Net train on this host's GPU or TPU, and how fast? One JSON.

    hanet-check-accelerator --out check.json           # a GPU or TPU host: under 5 min on one H100
    python -m hanet_jax.bench.accelerator_check --small   # 64 px, tiny encoder, CPU, ~1 min
    python scripts/check_accelerator.py ...            # the same, from a checkout

For a fresh host with jax, flax, optax, orbax-checkpoint, numpy and Pillow, plus the pure-Python
wheels ml_collections and clu: nothing here needs TensorFlow. It measures, on the default device:

- the device kind and count, the jax version, how float32 matmuls run (TF32?) and the peak
  FLOP/s each MFU figure divides by (`train.mfu`);
- `train_step`: the jitted train step `train.py` runs (BUSI recipe, augmentation on the device),
  at 256x256 in float32 and in bfloat16, at batch 32 or the largest power of two that fits:
  images/s, step time, MFU (XLA's FLOPs of the handler-free step), compile time, peak device
  memory;
- `inference`: the forward pass at batch 1 and 32, images/s;
- `parity`: the device's forward against the CPU's on the same weights and inputs, largest
  absolute difference of the probabilities: float32 with both sides at precision "highest",
  and the device's bfloat16 forward (as it trains) against the same CPU float32 reference;
- `train_run`: `train_and_evaluate` (what `train.py` runs) on the synthetic phantoms for two
  epochs, then resumed for a third: the loss falls, a checkpoint is written, the resume
  continues from it;
- `paper_recipe`: the wall time the paper's recipe (BUSI, 256 px, batch 10, at most 155 epochs
  of the release's 2,588 training and 647 validation images) would take here, projected from a
  step measured at batch 10 and the inference rate; an upper bound, as early stopping usually
  ends sooner (`--small` scales its float32 step to batch 10 instead of compiling another).

Compilations go to JAX's persistent cache in `--cache_dir` (named in the JSON), so a second run
skips them. `--small` runs every check at 64x64 with a one-layer-per-block encoder and small
batches, on whatever device is the default (the test suite runs it on the CPU).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from hanet_jax import command_line
from hanet_jax.json_files import write_json

# The release's BUSI run (../shared/spec/keras-original.md): its training folder of 3,235 files,
# the first 20% for validation, batch 10 in the paper, at most 155 epochs.
PAPER_TRAIN_IMAGES, PAPER_VAL_IMAGES, PAPER_BATCH, PAPER_EPOCHS = 2588, 647, 10, 155
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "hanet-jax", "xla")


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_bool("small", False, "64x64, a tiny encoder, small batches: the whole check in "
                      "about a minute on a CPU", flag_values=fv)
    flags.DEFINE_string("out", "accelerator_check.json", "where the JSON goes (also printed)",
                        flag_values=fv)
    flags.DEFINE_string("cache_dir", DEFAULT_CACHE, "JAX's persistent compilation cache",
                        flag_values=fv)
    flags.DEFINE_integer("batch_size", 0, "train-step batch (0: 32, or 8 with --small; halved "
                         "until it fits)", flag_values=fv)
    flags.DEFINE_integer("steps", 0, "timed train steps per dtype (0: 20, or 3 with --small)",
                         flag_values=fv)
    flags.DEFINE_string("workdir", None, "the train_run's workdir (default: a temporary folder, "
                        "deleted after)", flag_values=fv)


COMMAND = command_line.Command("hanet-check-accelerator", __doc__, _define_flags)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def _is_oom(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _peak_memory(device) -> int | None:
    """Peak bytes in use on `device` since the process started (None where the backend does not
    say: the CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


class _Setup:
    """The model, optimiser and data of the checks: the BUSI recipe at the check's size."""

    def __init__(self, small: bool):
        from hanet_jax.train import recipes

        self.small = small
        self.config = recipes.dataset_recipe("busi")
        self.image_size = 64 if small else 256
        self.config.model.image_size = self.image_size
        if small:
            self.config.model.encoder_blocks = (1, 1, 1, 1)

    def model(self, dtype: str):
        from hanet_jax.models.architectures import model_from_config
        from hanet_jax.train.init_from import resolve_model_config

        return model_from_config(resolve_model_config({**self.config.model.to_dict(),
                                                       "dtype": dtype}, ""))

    def batch(self, size: int, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        shape = (size, self.image_size, self.image_size)
        masks = np.zeros(shape + (1,), np.uint8)
        masks[:, shape[1] // 4: shape[1] // 2, shape[2] // 4: shape[2] // 2] = 1
        return {"image": rng.integers(0, 256, shape + (3,), np.uint8), "mask": masks,
                "index": np.arange(size, dtype=np.int32), "epoch": np.zeros(size, np.int32)}


def train_step_figures(setup: _Setup, dtype: str, batch_size: int, steps: int) -> dict:
    """The train step at `batch_size`, halved on out-of-memory until it fits."""
    from hanet_jax.data.augment import AugmentConfig
    from hanet_jax.train import mfu
    from hanet_jax.train.input import augment_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import batch_sharded, make_mesh
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import compiled_steps

    config = setup.config
    mesh, n_dev = make_mesh(), jax.device_count()
    model = setup.model(dtype)
    tx, plateau, _ = optimizer_from_config(config.optimizer, total_steps=1000)
    augment: AugmentConfig = augment_config(config.data)
    tried = []
    while batch_size >= n_dev:
        tried.append(batch_size)
        try:
            state = create_train_state(model, setup.image_size, tx, plateau, 0, mesh)
            batch = jax.device_put(setup.batch(batch_size), batch_sharded(mesh))
            train = compiled_steps(model, config.loss, tx, mesh, augment=augment).train
            flops = mfu.step_flops(train, state, batch)
            start = time.perf_counter()
            compiled = train.lower(state, batch).compile()
            compile_s = time.perf_counter() - start
            for _ in range(2):  # warm-up
                state, metrics = compiled(state, batch)
            jax.block_until_ready((state, metrics))
            start = time.perf_counter()
            for _ in range(steps):
                state, metrics = compiled(state, batch)
            jax.block_until_ready((state, metrics))
            seconds = time.perf_counter() - start
            break
        except Exception as e:  # noqa: BLE001 - only out-of-memory is retried
            if not _is_oom(e):
                raise
            logging.warning("train step, %s, batch %d: out of memory; trying %d", dtype,
                            batch_size, batch_size // 2)
            batch_size //= 2
    else:
        return {"error": f"out of memory down to batch {tried[-1] if tried else batch_size}"}
    peak = mfu.peak_flops(jax.devices()[0], dtype)
    step_s = seconds / steps
    return {
        "batch_size": batch_size, "batches_tried": tried, "timed_steps": steps,
        "step_time_s": step_s, "images_per_s": batch_size / step_s,
        "flops_per_step": flops, "flops_per_image": flops / batch_size if flops else None,
        "mfu": mfu.mfu(flops, steps, seconds, n_dev, peak.flops),
        "peak_flops_per_device": peak.flops, "peak_source": peak.source,
        "compile_s": compile_s, "loss_finite": bool(np.isfinite(float(metrics.loss.total))),
        "peak_device_memory_bytes": _peak_memory(jax.devices()[0]),
        "augment": [k for k, v in vars(augment).items() if v is True],
    }


def _forward(model):
    def forward(variables, image_uint8):
        logits = model.apply(variables, image_uint8.astype(jnp.float32) / 255.0, train=False)
        return jax.nn.sigmoid(logits.astype(jnp.float32))
    return jax.jit(forward)


def _variables(setup: _Setup, model) -> dict:
    """Float32 weights of a fresh model, on the host (the train state's initialiser)."""
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import make_mesh, to_host
    from hanet_jax.train.state import create_train_state

    tx, plateau, _ = optimizer_from_config(setup.config.optimizer, total_steps=1000)
    state = create_train_state(model, setup.image_size, tx, plateau, 0, make_mesh())
    return to_host(state.variables)


def inference_figures(setup: _Setup, batch_sizes: tuple[int, ...], repeats: int) -> dict:
    """Images/s of the float32 forward pass (probabilities) at each batch size."""
    model = setup.model("float32")
    variables = jax.device_put(_variables(setup, model), jax.devices()[0])
    forward = _forward(model)
    out = {}
    for b in batch_sizes:
        x = jax.device_put(setup.batch(b)["image"], jax.devices()[0])
        _, compile_and_first = _timed(lambda: forward(variables, x))
        times = [_timed(lambda: forward(variables, x))[1] for _ in range(repeats)]
        out[f"batch_{b}"] = {"images_per_s": b / float(np.median(times)),
                             "latency_s": float(np.median(times)),
                             "first_call_s": compile_and_first}
    return out


def parity_figures(setup: _Setup, batch_size: int = 2) -> dict:
    """Largest |probability difference| of the default device's forward against the CPU's, on
    the same float32 weights and inputs."""
    cpu = jax.local_devices(backend="cpu")[0]
    device = jax.devices()[0]
    model32 = setup.model("float32")
    variables = _variables(setup, model32)
    image = setup.batch(batch_size, seed=1)["image"]
    with jax.default_matmul_precision("highest"):
        reference = np.asarray(_forward(model32)(jax.device_put(variables, cpu),
                                                 jax.device_put(image, cpu)))
        on_device = np.asarray(_forward(model32)(jax.device_put(variables, device),
                                                 jax.device_put(image, device)))
    bf16 = np.asarray(_forward(setup.model("bfloat16"))(jax.device_put(variables, device),
                                                        jax.device_put(image, device)))
    return {"batch_size": batch_size, "reference": f"CPU float32, precision highest ({cpu})",
            "float32_highest_max_abs_diff": float(np.abs(on_device - reference).max()),
            "bfloat16_max_abs_diff": float(np.abs(bf16 - reference).max()),
            "same_device": device == cpu}


def train_run_figures(setup: _Setup, workdir: str) -> dict:
    """Two epochs of `train_and_evaluate` on the phantoms, then a resume to a third."""
    from hanet_jax.train import recipes
    from hanet_jax.train.loop import train_and_evaluate

    config = recipes.get_config()
    config.data.source = "synthetic"
    config.data.n_train, config.data.n_val = 32, 8
    config.model.image_size = 32 if setup.small else 64
    if setup.small:
        config.model.encoder_blocks = (1, 1, 1, 1)
    config.batch_size, config.num_epochs = 8, 2
    config.log_every_steps, config.num_overlays = 4, 0
    config.data.augment.affine = True
    start = time.perf_counter()
    first = train_and_evaluate(config, workdir)
    first_s = time.perf_counter() - start
    losses = [row["train_loss"] for row in first.summary["history"]]
    checkpoints = sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints"))
                         if p.isdigit())
    config.num_epochs = 3
    start = time.perf_counter()
    resumed = train_and_evaluate(config, workdir)
    resumed_s = time.perf_counter() - start
    history = resumed.summary["history"]
    return {
        "image_size": config.model.image_size, "steps_per_epoch": first.summary["steps_per_epoch"],
        "train_losses": losses, "loss_fell": len(losses) == 2 and losses[1] < losses[0],
        "checkpoint_steps": checkpoints, "checkpoint_written": bool(checkpoints),
        "resumed_epochs": len(history), "resumed_steps": resumed.summary["steps"],
        "resume_continued": len(history) == 3 and history[:2] == first.summary["history"]
        and resumed.summary["steps"] == 3 * first.summary["steps_per_epoch"],
        "wall_s": {"two_epochs": first_s, "resume_to_three": resumed_s},
        "images_per_s_summary": first.summary.get("images_per_second"),
    }


def paper_recipe_projection(step_at_10: dict, inference: dict) -> dict:
    """Upper bound on the paper recipe's wall time here, from the measured step at batch 10."""
    if "step_time_s" not in step_at_10:
        return {"error": step_at_10.get("error", "no step measured at batch 10")}
    steps_per_epoch = math.ceil(PAPER_TRAIN_IMAGES / PAPER_BATCH)
    rates = [v["images_per_s"] for v in inference.values()]
    val_s = PAPER_VAL_IMAGES / max(rates) if rates else 0.0
    epoch_s = steps_per_epoch * step_at_10["step_time_s"] + val_s
    return {"train_images": PAPER_TRAIN_IMAGES, "val_images": PAPER_VAL_IMAGES,
            "batch_size": PAPER_BATCH, "epochs_at_most": PAPER_EPOCHS,
            "steps_per_epoch": steps_per_epoch, "step_time_s_at_batch_10": step_at_10["step_time_s"],
            "epoch_s": epoch_s, "hours_at_most": PAPER_EPOCHS * epoch_s / 3600.0,
            "note": "arithmetic from measured steps; early stopping usually ends sooner"}


def run_check(*, small: bool, cache_dir: str, batch_size: int = 0, steps: int = 0,
              workdir: str | None = None) -> dict:
    """Every check; the JSON as a dict."""
    from hanet_jax.train import mfu

    started = time.perf_counter()
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    device = jax.devices()[0]
    setup = _Setup(small)
    batch_size = batch_size or (8 if small else 32)
    steps = steps or (3 if small else 20)
    result: dict[str, Any] = {
        "small": small, "image_size": setup.image_size,
        "device_kind": device.device_kind, "platform": device.platform,
        "device_count": jax.device_count(), "process_count": jax.process_count(),
        "jax_version": jax.__version__, "python": platform.python_version(),
        "float32_matmuls": mfu.float32_matmul_mode(device),
        "peak_flops_per_device": {dtype: mfu.peak_flops(device, dtype).flops
                                  for dtype in ("float32", "bfloat16")},
        "compilation_cache": cache_dir,
    }
    parts: dict[str, float] = {}

    def part(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            parts[name] = time.perf_counter() - start

    result["train_step"] = {dtype: part(f"train_step_{dtype}", lambda d=dtype: train_step_figures(
        setup, d, batch_size, steps)) for dtype in ("float32", "bfloat16")}
    result["inference"] = part("inference", lambda: inference_figures(
        setup, (1, 8 if small else 32), repeats=steps))
    result["parity"] = part("parity", lambda: parity_figures(setup))
    owned = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="hanet-check-")
    try:
        result["train_run"] = part("train_run", lambda: train_run_figures(setup, workdir))
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    if small:  # a tiny model's projection means little: scaled from the float32 step, no compile
        f32 = result["train_step"]["float32"]
        at_10 = {"step_time_s": f32["step_time_s"] * PAPER_BATCH / f32["batch_size"]}
    else:
        at_10 = part("train_step_batch_10", lambda: train_step_figures(
            setup, "float32", PAPER_BATCH, max(3, steps // 2)))
    result["paper_recipe"] = paper_recipe_projection(at_10, result["inference"])
    if small:
        result["paper_recipe"]["note"] += ("; --small: a 64 px tiny model, not the paper's, and "
                                           "its float32 step scaled to batch 10, not measured")
    result["part_s"] = parts
    result["wall_s"] = time.perf_counter() - started
    run = result["train_run"]
    result["ok"] = bool(run["loss_fell"] and run["checkpoint_written"] and run["resume_continued"]
                        and all(v.get("loss_finite") for v in result["train_step"].values()))
    return result


def main(argv: list[str] | None = None) -> int:
    args = COMMAND.parse(argv)
    result = run_check(small=args.small, cache_dir=args.cache_dir, batch_size=args.batch_size,
                       steps=args.steps, workdir=args.workdir)
    write_json(args.out, result)
    import json

    print(json.dumps(result, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if result["ok"] else 1


def run() -> None:
    """The `hanet-check-accelerator` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
