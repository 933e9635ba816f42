"""Training and validation of HA-Net: `train_and_evaluate(config, workdir)`.

- Parallelism: one Mesh over every device of every process, axis "data" (train/sharding.py).
  `train_step` and `eval_step` (train/steps.py) are pure functions, jitted with NamedShardings
  (state replicated, batch sharded on its first dimension, the state donated). Under jit a batch-sharded
  BatchNorm normalises over the global batch; no pmap, no axis names. Each process feeds its
  slice of every global batch (`pipeline.to_global_batch`).
- Schedule: Adam every step, its updates scaled by the ReduceLROnPlateau scale; the plateau
  and EarlyStopping see the validation loss once per epoch; the best checkpoint (by early
  stopping's notion of improvement) is what `restore_best_variables` / `load_bundle` load and
  what `TrainResult.variables` holds at the end (Keras' restore_best_weights).
- Metrics: clu collections (train/metrics.py), pooled over each epoch.
- Faults: SIGTERM or SIGINT -> a checkpoint at the next step boundary, with no validation pass
  first (a stop at an epoch's end runs that epoch's validation on resume), then a return with
  `TrainResult.preempted` and the exit status train.py gives (143, 130); on several hosts JAX's
  preemption sync point makes every process stop at the same step; a non-finite loss -> FloatingPointError naming the step, with
  nothing saved after the last good checkpoint; restarting with the same workdir resumes
  exactly (same batches, same dropout keys, same metrics), from the newest checkpoint that
  restores: a damaged one (checksum mismatch, unreadable file) is named in a warning and set
  aside (`checkpoints.training.restore_latest`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

import flax
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from hanet_jax import storage
from hanet_jax.checkpoints import format as checkpoints
from hanet_jax.train import config as config_utils
from hanet_jax.checkpoints import training as ckpt
from hanet_jax.train import input as train_data
from hanet_jax.train import mfu, tensorboard
from hanet_jax.train.profiling import StepProfiler
from hanet_jax.eval import overlays as viz
from hanet_jax.data.splits import DATA_SPLIT_FILE
from hanet_jax.data import pipeline
from hanet_jax.models.architectures import model_config, model_from_config
from hanet_jax.train.init_from import apply_init_from, resolve_model_config
from hanet_jax.train.keras_callbacks import EarlyStopping
from hanet_jax.train.metrics import TrainMetrics
from hanet_jax.train.optimizer import learning_rate_schedule, optimizer_from_config
from hanet_jax.train.sharding import batch_sharded, make_mesh, replicate, to_host
from hanet_jax.train.state import TrainState, abstract_train_state, create_train_state
from hanet_jax.train.steps import Steps, compiled_steps
from hanet_jax.json_files import write_json


@dataclasses.dataclass
class TrainResult:
    summary: dict
    state: TrainState          # the last training state
    variables: dict | None     # the best checkpoint's {"params", "batch_stats"}
    preempted: bool = False
    exit_status: int = 0       # train.py's: 143 after a SIGTERM, 130 after a SIGINT (Preemption)


def _fetch(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in to_host(metrics.compute()).items()}


def evaluate(steps: Steps, state, val: pipeline.DecodedDataset, mesh, batch_size: int,
             num_overlays: int = 0, feeder: str = "auto",
             sources: tuple[tuple[str, pipeline.DecodedDataset], ...] = ()
             ) -> tuple[dict, np.ndarray | None]:
    """Validation metrics over every example, and up to `num_overlays` overlays (uint8). With
    several `sources`, each is evaluated apart and the metrics pooled over all of them (each
    source's loss weighted by its validation size); the result then also holds
    "sources": {name: its own metrics}."""
    if not sources:
        merged, overlays = _evaluate(steps, state, val, mesh, batch_size, num_overlays, feeder)
        return _fetch(merged), overlays
    merged, overlays, per_source = None, None, {}
    for name, data in sources:
        metrics, shown = _evaluate(steps, state, data, mesh, batch_size,
                                   num_overlays if overlays is None else 0, feeder)
        per_source[name] = _fetch(metrics)
        merged = metrics if merged is None else merged.merge(metrics)
        overlays = shown if overlays is None else overlays
    return {**_fetch(merged), "sources": per_source}, overlays


def _evaluate(steps: Steps, state, val: pipeline.DecodedDataset, mesh, batch_size: int,
              num_overlays: int, feeder: str):
    """`evaluate` of one dataset: its metrics (unfetched, to merge) and overlays."""
    merged, overlays = None, None
    for local in pipeline.make_dataset(val, global_batch_size=batch_size, train=False,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(), feeder=feeder):
        metrics, pred = steps.eval(state, pipeline.to_global_batch(local, mesh))
        merged = metrics if merged is None else merged.merge(metrics)
        if overlays is None and num_overlays:
            pred = multihost_utils.global_array_to_host_local_array(
                pred, mesh, batch_sharded(mesh).spec)
            n = min(num_overlays, int(local["valid"].sum()))
            overlays = np.stack([viz.overlay(local["image"][i], np.asarray(pred[i]),
                                             local["mask"][i] > 0)
                                 for i in range(n)]) if n else None
    return merged, overlays


def _check_finite(loss, step: int, spe: int, manager) -> None:
    value = float(loss)
    if not math.isfinite(value):
        manager.wait_until_finished()
        raise FloatingPointError(
            f"training diverged: loss {value} at step {step} (epoch {step // spe}, batch "
            f"{step % spe}); stopped; nothing saved after it; the last good checkpoint is step "
            f"{manager.latest_step()} in {manager.directory}")


@dataclasses.dataclass
class _Run:
    """What the loop needs besides the state; `clock`/`images` time the training steps only."""
    config: Any
    workdir: str
    steps: Steps
    data: train_data.TrainData
    mesh: Any
    manager: Any
    writer: Any
    plateau: Any
    spe: int
    total_steps: int
    clock: float = 0.0
    images: int = 0
    train_seconds: float = 0.0
    train_images: int = 0
    peak: mfu.Peak | None = None         # per-device peak FLOP/s that MFU divides by
    flops_per_step: float | None = None  # XLA's count of the handler-free train step

    def learning_rate(self, state, step: int | None = None) -> float:
        """The rate Adam applied at `step` (default: the last step done)."""
        step = int(state.step) - 1 if step is None else step
        opt = self.config.optimizer
        if opt.schedule == "cosine":
            schedule = learning_rate_schedule(float(opt.learning_rate), self.total_steps,
                                              float(opt.min_lr))
            return float(schedule(max(step, 0)))
        return self.plateau.lr(to_host(state.plateau))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       batch_hook: Callable[[int, dict], dict] | None = None) -> TrainResult:
    """Trains per `config`, resuming from WORKDIR/checkpoints when there are any.

    `batch_hook(step, local_batch) -> local_batch`, for debugging and fault-injection tests,
    sees each process's numpy batch before it is sharded.
    """
    start_time = time.time()
    config = ml_collections.ConfigDict(config_utils.validate_config(config))
    workdir = storage.text(workdir)  # a local folder or gs://...; never made "./gs:/..."
    mesh, n_dev = make_mesh(), jax.device_count()
    if config.batch_size % n_dev:
        raise config_utils.ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the {n_dev} devices")
    if config.init_from:
        checkpoints.read_meta(config.init_from)  # fail early, naming the path
    data = train_data.build_data(config, workdir)
    logging.info("host feed: %s (config.data.feeder=%s); augmentation on the device: %s",
                 pipeline.feeder_name(config.data.feeder), config.data.feeder,
                 ", ".join(k for k, v in vars(data.augment).items() if v is True) or "none")
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    spe = pipeline.steps_per_epoch(len(data.train), config.batch_size)
    tx, plateau, stopper = optimizer_from_config(config.optimizer, spe * config.num_epochs)

    storage.path(workdir).mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        config_utils.save_config(storage.path(workdir) / "config.json", config)
        checkpoints.write_meta(workdir, kind="workdir", model_cfg=model_config(model),
                               image_size=(config.model.image_size,) * 2)
        if data.split_record is not None:
            write_json(storage.path(workdir) / DATA_SPLIT_FILE, data.split_record)
    c = config.checkpoint
    manager = ckpt.make_manager(workdir, keep_latest=c.keep_latest, keep_best=c.keep_best,
                                async_save=c.async_save)
    writer = tensorboard.create_writer(workdir, just_logging=jax.process_index() > 0)
    ema_decay = float(config.optimizer.ema_decay)
    steps = compiled_steps(model, config.loss, tx, mesh, ema_decay, augment=data.augment,
                           seed=config.seed)
    run = _Run(config, workdir, steps, data, mesh, manager, writer, plateau, spe,
               spe * config.num_epochs,
               peak=mfu.peak_flops(jax.devices()[0], config.model.dtype,
                                   override=config.peak_flops))
    logging.info("MFU against %s per device; float32 matmuls: %s (compute dtype %s)",
                 f"{run.peak.flops / 1e12:.4g} TFLOP/s" if run.peak.flops else "no peak",
                 mfu.float32_matmul_mode(), config.model.dtype)
    logging.info("peak FLOP/s from: %s", run.peak.source)
    try:
        progress = {"history": [], "stopper": dataclasses.asdict(stopper), "train_metrics": None,
                    "wall_seconds": 0.0}
        # A resume restores every field of the state into its shapes and shardings: the init
        # program is compiled and run only for a fresh run.
        restored = ckpt.restore_latest(manager, abstract_train_state(
            model, config.model.image_size, tx, plateau, mesh, ema=ema_decay > 0))
        if restored:
            state, progress = restored
            if progress["steps_per_epoch"] != spe:
                raise config_utils.ConfigError(
                    f"{manager.directory}: the checkpoints have {progress['steps_per_epoch']} "
                    f"steps per epoch, this config {spe} (config.batch_size or the data changed);"
                    " use a new workdir")
            logging.info("resuming from step %d in %s", int(state.step), manager.directory)
            _note_topology(progress, int(state.step))
        else:
            state = create_train_state(model, config.model.image_size, tx, plateau, config.seed,
                                       mesh, ema=ema_decay > 0)
            if config.init_from:
                state = apply_init_from(state, config.init_from, config.init_scope, mesh)
                logging.info("initialised %s from %s", config.init_scope, config.init_from)
            else:
                writer.write_hparams(config_utils.flatten(config.to_dict()))
        progress["wall_seconds"] -= start_time  # + the time at any save: total over restarts
        return _train_loop(run, state, EarlyStopping(**progress["stopper"]), progress, batch_hook)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.flush()
        writer.close()


def _note_topology(meta: Mapping, step: int) -> None:
    """One line when a run resumes on another device or process count than it saved on (a
    preempted job often comes back on another slice). The state was restored with this mesh's
    shardings; the global batch, and so the data order and the step, are unchanged."""
    saved = (meta.get("devices"), meta.get("processes"))
    now = (jax.device_count(), jax.process_count())
    if saved[0] is not None and saved != now:
        logging.warning("the device count changed: step %d was saved on %d devices (%d "
                        "processes), resuming on %d devices (%d processes) with the same global "
                        "batch", step, *saved, *now)


def _meta(run: _Run, step: int, stopper, history, epoch_metrics, progress) -> dict:
    """The checkpoint's JSON: data position, early stopping, history, and the metrics of an epoch
    not yet validated (mid-epoch, or stopped by a signal at its end)."""
    open_epoch = None
    if epoch_metrics is not None:
        open_epoch = jax.tree.map(lambda x: x.item(),
                                  flax.serialization.to_state_dict(to_host(epoch_metrics)))
    return {"step": step, "epoch": step // run.spe, "steps_per_epoch": run.spe,
            "devices": jax.device_count(), "processes": jax.process_count(), "history": history, "stopper": dataclasses.asdict(stopper),
            "train_metrics": open_epoch, "wall_seconds": progress["wall_seconds"] + time.time()}


def _train_loop(run: _Run, state, stopper, progress, batch_hook) -> TrainResult:
    config, manager, spe = run.config, run.manager, run.spe
    history, epoch_metrics = progress["history"], None
    if progress["train_metrics"] is not None:  # an epoch interrupted mid-way
        epoch_metrics = flax.serialization.from_state_dict(
            TrainMetrics.empty(), jax.tree.map(np.asarray, progress["train_metrics"]))
    first_step = done = int(state.step)
    progress_clock = (time.time(), first_step)  # steps/s between log lines
    preempted = False
    if epoch_metrics is not None and first_step % spe == 0:
        # Stopped by a signal right at an epoch's end, before its validation: run it now, as the
        # uninterrupted run did, in place of the checkpoint that stop saved at this step.
        run.clock, run.images = time.time(), 0
        manager.delete(first_step)
        stopper, state = _end_epoch(run, state, stopper, history, epoch_metrics, progress)
        epoch_metrics = None
    with ckpt.Preemption() as preemption, StepProfiler(run.workdir,
                                                       config.profile_steps) as profiler:
        batches = pipeline.iterate_batches(
            run.data.train, global_batch_size=config.batch_size, start_step=first_step,
            num_epochs=config.num_epochs, seed=config.seed, process_index=jax.process_index(),
            process_count=jax.process_count(), feeder=config.data.feeder)
        last_loss = None
        for step, local in (batches if not stopper.stop and first_step < run.total_steps else ()):
            if batch_hook is not None:
                local = batch_hook(step, local)
            batch = pipeline.to_global_batch(local, run.mesh)
            profiler.before(step)
            state, metrics = run.steps.train(state, batch)
            profiler.after(step, (state, metrics))
            if last_loss is not None:  # checked one step late: the device keeps working
                _check_finite(*last_loss, spe, manager)
            last_loss = (metrics.loss.total, step)
            epoch_metrics = metrics if epoch_metrics is None else epoch_metrics.merge(metrics)
            done = step + 1
            if step == first_step:  # compilation: throughput is timed from the next step on
                jax.block_until_ready(metrics)
                # FLOPs from a lowering only (nothing runs; the donated state is not touched)
                run.flops_per_step = mfu.step_flops(run.steps.train, state, batch)
                run.clock, run.images = time.time(), 0
            else:
                run.images += config.batch_size
            log, end_epoch = done % config.log_every_steps == 0, done % spe == 0
            periodic = config.checkpoint.every_steps and done % config.checkpoint.every_steps == 0
            preempted = preemption.reached(done)
            if log or end_epoch or periodic or preempted:
                _check_finite(*last_loss, spe, manager)  # never log or save past a NaN
            if log:
                scalars = {f"train/{k}": v for k, v in _fetch(epoch_metrics).items()}
                scalars["train/learning_rate"] = run.learning_rate(state)
                now = time.time()
                rate = (done - progress_clock[1]) / max(now - progress_clock[0], 1e-9)
                progress_clock = (now, done)
                scalars["train/steps_per_second"] = rate
                run.writer.write_scalars(done, scalars)
                logging.info("step %d/%d: %.3g steps/s, ETA %.0f s", done, run.total_steps,
                             rate, (run.total_steps - done) / rate)
            if end_epoch and not preempted:
                stopper, state = _end_epoch(run, state, stopper, history, epoch_metrics,
                                            progress)
                epoch_metrics = None
                # A signal during that validation: its checkpoint is the place to stop.
                preempted = preemption.arrived_in_one_process()
            elif periodic or preempted:  # a signal: save now, validation waits for the resume
                ckpt.save(manager, state, _meta(run, done, stopper, history, epoch_metrics,
                                                progress))
            if preempted:
                manager.wait_until_finished()
                logging.warning("preempted (%s): checkpoint at step %d in %s; run the same command "
                                "again to resume", preemption.signal_name, done, manager.directory)
                break
            if stopper.stop:
                break
    manager.wait_until_finished()
    if preempted:
        return TrainResult({"preempted_at_step": done, "signal": preemption.signal_name}, state, None,
                           preempted=True, exit_status=preemption.exit_status)
    best_step, variables = ckpt.restore_best(manager, state.eval_variables)
    summary = _summary(run, history, stopper, best_step, done,
                       progress["wall_seconds"] + time.time())
    if jax.process_index() == 0:
        write_json(storage.path(run.workdir) / "summary.json", summary)
    logging.info("done: best val_loss %s (val Dice %s) at step %s; %d epochs; %.0f s",
                 summary["best_val_loss"], summary["best_val_dice"], best_step, len(history),
                 summary["wall_seconds"])
    return TrainResult(summary, state, variables)


def _summary(run: _Run, history, stopper, best_step, done, wall) -> dict:
    best = history[stopper.best_epoch] if history and stopper.best_epoch >= 0 else {}
    return {
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "best_val_loss": best.get("val_loss"), "best_val_dice": best.get("val_dice"),
        **({"best_val_dice_by_source": {n: m["dice"] for n, m in best["val_sources"].items()}}
           if "val_sources" in best else {}),
        "best_step": best_step, "best_epoch": stopper.best_epoch, "epochs": len(history),
        "steps": done, "steps_per_epoch": run.spe, "stopped_early": stopper.stop,
        # training steps only, over this run's epochs (the first step, compiling, excluded)
        "images_per_second": run.train_images / run.train_seconds if run.train_seconds else None,
        # MFU over those steps: XLA's FLOPs of the handler-free step over the devices' peak
        "mfu": mfu.mfu(run.flops_per_step, run.train_images // run.config.batch_size,
                       run.train_seconds, jax.device_count(), run.peak.flops),
        "flops_per_step": run.flops_per_step, "peak_flops_per_device": run.peak.flops,
        "peak_flops_source": run.peak.source, "float32_matmuls": mfu.float32_matmul_mode(),
        "devices": jax.device_count(), "processes": jax.process_count(), "wall_seconds": wall,
        "history": history}


def _end_epoch(run: _Run, state, stopper, history, epoch_metrics, progress):
    """Validation, schedule, checkpoint and logs at the end of an epoch."""
    config, done = run.config, int(state.step)
    epoch = done // run.spe - 1
    train = _fetch(epoch_metrics)  # waits for the epoch's last step
    seconds = time.time() - run.clock
    run.train_seconds, run.train_images = run.train_seconds + seconds, run.train_images + run.images
    images_per_second = run.images / seconds if run.images else None
    rates = mfu.throughput(run.flops_per_step, run.images // config.batch_size, seconds,
                           config.batch_size, jax.device_count(), run.peak.flops)
    lr = run.learning_rate(state, done - 1)  # the rate of the epoch's last step
    val, overlays = evaluate(run.steps, state, run.data.val, run.mesh, config.batch_size,
                             config.num_overlays if jax.process_index() == 0 else 0,
                             config.data.feeder, run.data.val_sources)
    if config.optimizer.schedule == "plateau":
        new_plateau = run.plateau.step(to_host(state.plateau), val["loss"])
        state = state.replace(plateau=replicate(to_host(new_plateau), run.mesh))
    stopper = stopper.update(val["loss"])
    row = {"epoch": epoch, "step": done, "train_loss": train["loss"], "train_dice": train["dice"],
           "train_iou": train["iou"], "val_loss": val["loss"], "val_dice": val["dice"],
           "val_iou": val["iou"], "learning_rate": lr, "improved": stopper.improved,
           "images_per_second": images_per_second, "step_time_s": rates.get("step_time_s"),
           "mfu": rates.get("mfu")}
    if "sources" in val:  # config.data.sources: each one's validation loss and Dice
        row["val_sources"] = {name: {"loss": m["loss"], "dice": m["dice"], "iou": m["iou"]}
                              for name, m in val["sources"].items()}
    history.append(row)
    ckpt.save(run.manager, state, _meta(run, done, stopper, history, None, progress), metrics={
        "val_loss": val["loss"], "val_dice": val["dice"], "improved": stopper.improved,
        "epoch": epoch})
    scalars = {f"epoch/{k}": v for k, v in row.items()
               if k not in ("epoch", "step", "improved", "val_sources") and v is not None}
    for name, m in row.get("val_sources", {}).items():
        scalars.update({f"epoch/val_{k}/{name}": v for k, v in m.items()})
    run.writer.write_scalars(done, scalars)
    if overlays is not None:
        run.writer.write_images(done, {"val/overlays": overlays})
    run.writer.flush()  # a bucket workdir's events are copied at every flush (tensorboard.py)
    elapsed = progress["wall_seconds"] + time.time()
    per_epoch = elapsed / len(history)
    logging.info("epoch %d/%d (step %d/%d): train loss %.4f Dice %.3f | val loss %.4f Dice %.3f "
                 "IoU %.3f | lr %.3g | %s img/s, %s s/step, MFU %s | elapsed %.0f s, ETA %.0f s%s",
                 epoch + 1, config.num_epochs, done, run.total_steps, train["loss"], train["dice"],
                 val["loss"], val["dice"], val["iou"], lr,
                 f"{images_per_second:.1f}" if images_per_second else "-",
                 f"{rates['step_time_s']:.3g}" if "step_time_s" in rates else "-",
                 f"{rates['mfu']:.2%}" if "mfu" in rates else "-", elapsed,
                 per_epoch * (config.num_epochs - epoch - 1), " | best" if stopper.improved else "")
    if stopper.stop:
        logging.info("early stopping after epoch %d (best epoch %d)", epoch + 1,
                     stopper.best_epoch + 1)
    run.clock, run.images = time.time(), 0
    return stopper, state
