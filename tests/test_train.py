"""The trainer end to end on the tiny config: outputs, best checkpoint, SIGTERM to a subprocess
then an exact resume past an incomplete save, NaN, init_from, bfloat16.

Everything reuses one compiled model (see _train_helpers); only the SIGTERM test starts a
subprocess, and it loads the executables this process compiled from the persistent cache.
"""

import json
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _train_helpers as helpers
from hanet_jax.checkpoints import format as checkpoints
from hanet_jax.checkpoints import loading as checkpoints_loading
from hanet_jax.checkpoints import training as train_checkpoints
from hanet_jax.train import loop as train_lib
from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.data import pipeline
from hanet_jax.data.splits import DATA_SPLIT_FILE
from hanet_jax.models.architectures import model_config, model_from_config
from hanet_jax.train.init_from import apply_init_from, resolve_model_config
from hanet_jax.train.optimizer import optimizer_from_config
from hanet_jax.train.sharding import make_mesh, to_host
from hanet_jax.train.state import create_train_state
from hanet_jax.train.steps import compiled_steps

SUMMARY_KEYS = {"final_train_loss", "best_val_loss", "best_val_dice", "best_step", "epochs",
                "stopped_early", "images_per_second", "devices", "processes", "wall_seconds"}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return helpers.reference_run(tmp_path_factory)


def _fresh_state(config):
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    mesh = make_mesh()
    return model, create_train_state(model, config.model.image_size, tx, plateau, config.seed,
                                     mesh), mesh


def test_run_writes_summary_meta_config_logs_and_checkpoints(ref):
    workdir, summary = ref["workdir"], ref["summary"]
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert SUMMARY_KEYS <= on_disk.keys()
    assert on_disk["epochs"] == 2 and on_disk["steps"] == 4 and not on_disk["stopped_early"]
    assert on_disk["devices"] == jax.device_count() and on_disk["processes"] == 1
    assert np.isfinite(on_disk["final_train_loss"]) and on_disk["images_per_second"] > 0
    assert on_disk["final_train_loss"] == summary["final_train_loss"]
    assert on_disk["final_train_loss"] == on_disk["history"][-1]["train_loss"]
    assert on_disk["best_val_loss"] == min(r["val_loss"] for r in on_disk["history"]
                                           if r["improved"])
    assert all(r["learning_rate"] == pytest.approx(1e-3) for r in on_disk["history"])
    meta = checkpoints.read_meta(workdir)
    assert meta["kind"] == "workdir" and meta["image_size"] == [32, 32]
    assert meta["model"]["variant"] == "full"
    config = json.loads((workdir / "config.json").read_text())
    assert config == json.loads(json.dumps(helpers.tiny_config().to_dict()))
    assert any(p.name.startswith("events.out.tfevents") for p in workdir.iterdir())
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 4 and summary["best_step"] in steps
    # throughput and MFU: XLA's FLOPs of the handler-free step over the measured CPU peak
    assert on_disk["flops_per_step"] > 1e9 and on_disk["peak_flops_per_device"] > 1e9
    assert 0 < on_disk["mfu"] < 1 and "measured" in on_disk["peak_flops_source"]
    for row in on_disk["history"]:
        assert 0 < row["mfu"] < 1 and row["step_time_s"] > 0


def test_profile_steps_leave_a_trace_and_tensorboard_holds_mfu(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    config = helpers.tiny_config(num_epochs=1, profile_steps="1,1", num_overlays=0)
    train_lib.train_and_evaluate(config, str(tmp_path))
    traces = [p for p in (tmp_path / "profile").rglob("*") if p.name.endswith(
        (".xplane.pb", ".trace.json.gz"))]
    assert traces, sorted(str(p) for p in (tmp_path / "profile").rglob("*"))
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()
    scalars = set(tags.get("scalars", [])) | set(tags.get("tensors", []))
    assert {"epoch/mfu", "epoch/step_time_s", "epoch/images_per_second"} <= scalars, scalars


def test_best_checkpoint_is_what_load_bundle_and_the_result_hold(ref):
    bundle = checkpoints_loading.load_bundle(ref["workdir"])
    assert bundle.image_size == (32, 32)
    assert model_config(bundle.model) == model_config(model_from_config(resolve_model_config(helpers.tiny_config().model.to_dict(), "")))
    best = helpers.flat_params(ref["result"].variables)
    loaded = helpers.flat_params(bundle.variables)
    assert best.keys() == loaded.keys()
    assert all(np.array_equal(best[k], loaded[k]) for k in best)
    # the best is the early-stopping best epoch's checkpoint
    history = ref["summary"]["history"]
    assert ref["summary"]["best_step"] == history[ref["summary"]["best_epoch"]]["step"]


def _stop_a_worker(workdir, tmp_path, sig, step=0):
    """Runs the tiny config in a worker process and sends `sig` just before training step `step`
    (a handshake: the handler is installed); returns (exit status, stderr)."""
    prefix = tmp_path / "handshake"
    cmd = helpers.worker_command(workdir, tmp_path / "out.npz", sigterm_handshake=prefix, sigterm_step=step)
    proc = subprocess.Popen(cmd, env=helpers.subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    (err,) = helpers.signal_at_handshake([proc], prefix, sig)
    return proc.returncode, err


def _assert_resumed_exactly(resumed, ref):
    params = helpers.flat_params(to_host(resumed.state.variables))
    assert all(np.array_equal(params[k], ref["params"][k]) for k in params)
    assert resumed.summary["final_train_loss"] == ref["summary"]["final_train_loss"]
    for got, want in zip(resumed.summary["history"], ref["summary"]["history"], strict=True):
        assert helpers.without_timings(got) == helpers.without_timings(want)


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_a_subprocess_saves_and_exits_non_zero_then_resumes_exactly(ref, tmp_path, sig, status):
    # A preempted run must look like a failure to a scheduler (so it is rerun), as a shell reports
    # the signal: 128 + 15 for SIGTERM, 128 + 2 for SIGINT.
    workdir = tmp_path / "w"
    returncode, err = _stop_a_worker(workdir, tmp_path, sig)
    assert returncode == status, err[-4000:]
    assert f"preempted ({signal.Signals(sig).name}): checkpoint at step 1" in err
    _, summary = helpers.load_result(tmp_path / "out.npz")
    assert summary["preempted"] and summary["preempted_at_step"] == 1
    assert not (workdir / "summary.json").exists()
    with train_checkpoints.make_manager(workdir, read_only=True) as manager:
        assert manager.all_steps() == [1]  # mid-epoch: step 0 ran, then the boundary save
    # A run killed while saving leaves a temporary step directory: it must be ignored.
    partial = workdir / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
    (partial / "variables").mkdir(parents=True)
    (partial / "variables" / "junk").write_bytes(b"\0" * 100)
    resumed = train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir))
    assert not partial.exists()
    _assert_resumed_exactly(resumed, ref)


@pytest.mark.slow
def test_a_sigterm_at_an_epochs_end_saves_first_and_validates_on_resume(ref, tmp_path):
    # Step 1 ends epoch 0 (2 steps per epoch): the signal arrives before it, the step runs, and
    # the run saves at once, with no validation pass in the grace period; the resume runs epoch
    # 0's validation, and the whole run is the uninterrupted one, bit for bit.
    workdir = tmp_path / "w"
    returncode, err = _stop_a_worker(workdir, tmp_path, signal.SIGTERM, step=1)
    assert returncode == 143, err[-4000:]
    assert "preempted (SIGTERM): checkpoint at step 2" in err
    with train_checkpoints.make_manager(workdir, read_only=True) as manager:
        assert manager.all_steps() == [2]
    saved = json.loads((workdir / "checkpoints" / "2" / "meta" / "metadata").read_text())
    assert saved["history"] == [] and saved["train_metrics"] is not None  # validation not yet run
    resumed = train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir))
    assert [r["epoch"] for r in resumed.summary["history"]] == [0, 1]
    _assert_resumed_exactly(resumed, ref)


def test_a_signal_during_an_epochs_validation_stops_at_its_checkpoint(ref, tmp_path, monkeypatch):
    # The signal arrives while epoch 0 validates (after step 1): the run stops at the checkpoint
    # that validation just saved (step 2), not one training step later, and resumes exactly.
    import os

    real = train_lib._end_epoch

    def while_validating(*args, **kwargs):
        out = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # Preemption's handler records it
        return out

    monkeypatch.setattr(train_lib, "_end_epoch", while_validating)
    workdir = tmp_path / "w"
    stopped = train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir))
    assert stopped.preempted and stopped.exit_status == 143
    assert stopped.summary == {"preempted_at_step": 2, "signal": "SIGTERM"}
    with train_checkpoints.make_manager(workdir, read_only=True) as manager:
        assert manager.all_steps() == [2]
    monkeypatch.setattr(train_lib, "_end_epoch", real)
    _assert_resumed_exactly(train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir)), ref)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(ref, tmp_path):
    def poison(step, batch):
        if step == 2:
            # float images pass the step's uint8 conversion as they are
            batch = {**batch, "image": np.full(batch["image"].shape, np.nan, np.float32)}
        return batch

    with pytest.raises(FloatingPointError, match=r"loss nan at step 2 .*last good checkpoint "
                                                 r"is step 2"):
        train_lib.train_and_evaluate(helpers.tiny_config(), str(tmp_path), batch_hook=poison)
    with train_checkpoints.make_manager(tmp_path, read_only=True) as manager:
        assert manager.all_steps() == [2]
    variables = train_checkpoints.restore_best_variables(tmp_path)
    assert all(np.isfinite(v).all() for v in helpers.flat_params(variables).values())


def test_init_from_workdir_all_loads_the_best_weights(ref):
    config = helpers.tiny_config()
    _, state, mesh = _fresh_state(config)
    state = apply_init_from(state, str(ref["workdir"]), "all", mesh)
    loaded = helpers.flat_params(to_host(state.variables))
    best = helpers.flat_params(ref["result"].variables)
    assert all(np.array_equal(loaded[k], best[k]) for k in best)


def _export(directory, variables, config):
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    checkpoints.save_variables(directory, variables, model_cfg=model_config(model),
                               image_size=(32, 32))
    return str(directory)


def test_init_from_encoder_only_checkpoint(ref, tmp_path):
    config = helpers.tiny_config()
    _, state, mesh = _fresh_state(config)
    fresh = to_host(state.variables)
    best = ref["result"].variables
    encoder_only = {"params": {"encoder": best["params"]["encoder"]},
                    "batch_stats": {"encoder": best["batch_stats"]["encoder"]}}
    source = _export(tmp_path / "enc", encoder_only, config)
    loaded = helpers.flat_params(to_host(apply_init_from(state, source, "encoder", mesh).variables))
    want_encoder, want_fresh = helpers.flat_params(best), helpers.flat_params(fresh)
    for key, value in loaded.items():
        want = want_encoder if "/encoder/" in f"/{key}" else want_fresh
        assert np.array_equal(value, np.asarray(want[key])), key
    with pytest.raises(CheckpointError, match="init_scope=encoder"):
        apply_init_from(state, source, "all", mesh)


@pytest.mark.slow
def test_training_from_a_ported_imagenet_encoder(ref, tmp_path):
    """A torchvision-style encoder checkpoint: its BN eps and ImageNet normalisation come along
    (input_normalization "auto"), the encoder is loaded, and training runs."""
    from hanet_jax.port.keras_densenet import save_encoder_checkpoint

    best = ref["result"].variables
    densenet = {c: jax.tree.map(np.asarray, best[c]["encoder"]) for c in ("params", "batch_stats")}
    source = str(save_encoder_checkpoint(tmp_path / "enc", densenet, epsilon=1e-5))
    config = helpers.tiny_config(num_epochs=1, init_from=source, init_scope="encoder")
    resolved = resolve_model_config(config.model.to_dict(), source)
    assert resolved["input_normalization"] == "imagenet" and resolved["encoder_epsilon"] == 1e-5
    _, state, mesh = _fresh_state(config)
    loaded = apply_init_from(state, source, "encoder", mesh).variables
    for c in ("params", "batch_stats"):
        assert jax.tree.all(jax.tree.map(np.array_equal, to_host(loaded)[c]["encoder"], densenet[c]))
    result = train_lib.train_and_evaluate(config, str(tmp_path / "w"))
    assert np.isfinite(result.summary["final_train_loss"])
    meta = checkpoints.read_meta(tmp_path / "w")["model"]
    assert meta["input_normalization"] == "imagenet" and meta["encoder_epsilon"] == 1e-5
    opted_out = helpers.tiny_config(init_from=source, model__input_normalization="none")
    assert resolve_model_config(opted_out.model.to_dict(), source)["input_normalization"] == "none"


def test_init_from_mismatched_shapes_names_the_paths(ref, tmp_path):
    config = helpers.tiny_config()
    _, state, mesh = _fresh_state(config)
    variables = jax.tree.map(np.asarray, ref["result"].variables)
    variables["params"]["head"]["out_conv"]["kernel"] = np.zeros((1, 1, 16, 2), np.float32)
    del variables["params"]["dec1"]
    source = _export(tmp_path / "bad", variables, config)
    with pytest.raises(CheckpointError) as error:
        apply_init_from(state, source, "all", mesh)
    message = str(error.value)
    assert "params/head/out_conv/kernel" in message and "(1, 1, 16, 1)" in message
    assert "missing from the checkpoint: params/dec1/" in message
    with pytest.raises(CheckpointError, match="does not exist"):
        apply_init_from(state, str(tmp_path / "nowhere"), "all", mesh)


def test_init_from_through_the_config(ref, tmp_path):
    config = helpers.tiny_config(num_epochs=1, init_from=str(ref["workdir"]))
    result = train_lib.train_and_evaluate(config, str(tmp_path))
    scratch = ref["summary"]["history"][0]["train_loss"]
    assert result.summary["history"][0]["train_loss"] < scratch
    missing = helpers.tiny_config(init_from=str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="missing"):
        train_lib.train_and_evaluate(missing, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_bfloat16_step_keeps_float32_params_and_batch_stats(ref):
    config = helpers.tiny_config(model__dtype="bfloat16")
    model, state, mesh = _fresh_state(helpers.tiny_config())  # same tree as float32
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, _, _ = optimizer_from_config(config.optimizer)
    steps = compiled_steps(model, config.loss, tx, mesh)
    images, masks = np.zeros((8, 32, 32, 3), np.float32), np.zeros((8, 32, 32, 1), np.float32)
    images[:, 8:24, 8:24] = 0.8
    masks[:, 8:24, 8:24] = 1
    batch = pipeline.to_global_batch({"image": images, "mask": masks}, mesh)
    new_state, metrics = steps.train(state, batch)
    assert np.isfinite(float(metrics.loss.total)) and int(new_state.step) == 1
    dtypes = {x.dtype for x in jax.tree.leaves(new_state.variables)}
    assert dtypes == {jnp.dtype("float32")}


def test_folder_run_records_its_held_out_splits_for_eval(ref, tmp_path):
    import data_fixtures
    import eval as eval_cli
    from hanet_jax.eval import evaluate as eval_lib
    from hanet_jax.data import check

    data_fixtures.write_processed(str(tmp_path / "data"), n=30)
    config = helpers.tiny_config(num_epochs=1, data__source="folder", data__test_fraction=0.2,
                                 data__root=str(tmp_path / "data"), data__layout="processed")
    train_lib.train_and_evaluate(config, str(tmp_path / "w"))
    record = json.loads((tmp_path / "w" / DATA_SPLIT_FILE).read_text())
    assert record["root"] == str(tmp_path / "data") and record["split"] == "train"
    assert record["layout"] == "processed" and record["val_split"] == "grouped"
    assert record["include_normal"] is False
    val, test = set(record["val"]), set(record["test"])
    assert len(test) == 6 and len(val) == 5 and not val & test  # 20% of 30, then ~20% of 24
    assert val | test < {str(i) for i in range(1, 31)}
    assert set(record["groups"]) == val | test  # for eval's grouped confidence intervals
    # eval.py --threshold_from_split val reads exactly those stems back.
    pool = check.require_valid(str(tmp_path / "data"), "processed", "train")
    examples, info = eval_lib.resolve_threshold_examples(
        tmp_path / "w", "unused", "processed", "val", [ex for ex in pool if ex.stem in test])
    assert [ex.stem for ex in examples] == record["val"] and info["source"].endswith(
        DATA_SPLIT_FILE)
    # eval.py --run_split test scores the test images with the threshold chosen on val.
    out, w = tmp_path / "test.json", str(tmp_path / "w")
    assert eval_cli.main(["--checkpoint", w, "--run_split", "test", "--threshold_from_split",
                          "val", "--protocol", "both", "--bootstrap", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bootstrap"]["over"] == "near-duplicate groups" and report["bootstrap"][
        "n_groups"] == len({record["groups"][s] for s in test})
    assert report["n_images"] == 6 and report["data"]["root"] == str(tmp_path / "data")
    assert report["data"]["split"].startswith("test of ") and set(report["protocols"]) == {
        "fixed", "paper_oracle"}
    assert report["protocols"]["fixed"]["threshold_selection"]["n_images"] == 5
    # Tuning and scoring on the same images, or neither data nor a run split: refused.
    assert eval_cli.main(["--checkpoint", w, "--run_split", "val", "--threshold_from_split",
                          "val", "--out", str(out)]) == 2
    assert eval_cli.main(["--checkpoint", w, "--out", str(out)]) == 2


def test_the_abstract_state_has_the_created_states_shapes_dtypes_and_shardings():
    # What the lowering tests trace the train step with, instead of compiling the init.
    from hanet_jax.train.state import abstract_train_state

    config = helpers.tiny_config()
    model, state, mesh = _fresh_state(config)
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    abstract = abstract_train_state(model, config.model.image_size, tx, plateau, mesh)
    got = jax.tree_util.tree_flatten_with_path(abstract)
    want = jax.tree_util.tree_flatten_with_path(state)
    assert [p for p, _ in got[0]] == [p for p, _ in want[0]] and got[1] == want[1]
    for (path, a), (_, s) in zip(got[0], want[0]):
        assert (a.shape, a.dtype, a.sharding, a.weak_type) == (
            s.shape, s.dtype, s.sharding, s.weak_type), jax.tree_util.keystr(path)
