"""Damaged checkpoints degrade one step at a time: each kind of damage to the newest (and best)
checkpoint of the tiny reference run, on a copy of its workdir.

- a bit flip in a data file that still decompresses (found by asking Orbax itself): only the
  checksums stored at save notice it;
- a data file cut in half: TensorStore fails to read it;
- a garbled `_METADATA`: Orbax cannot tell what the item holds.

For each: resuming warns in one line naming the step and why, falls back to the previous step
and continues exactly as the uninterrupted run did; eval.py and predict.py print one line naming
the step directory and the steps that are left, and exit 2; the export and `config.init_from`
fail with that line too. A step directory given as the checkpoint is how an older step is used.
Checkpoints written before checksums existed still restore.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import _train_helpers as helpers
import data_fixtures
from hanet_jax.checkpoints import format as checkpoints
from hanet_jax.checkpoints import training as train_checkpoints
from hanet_jax.checkpoints.format import CheckpointError
from hanet_jax.checkpoints.loading import load_variables
from hanet_jax.export.serving_function import ExportError, serving_function
from hanet_jax.train import loop as train_lib
from hanet_jax.train import recipes
from hanet_jax.train.sharding import to_host

ROOT = Path(__file__).resolve().parents[1]
DAMAGE = ("bit_flip", "truncation", "metadata")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return helpers.reference_run(tmp_path_factory)


def _copy(ref, tmp_path) -> Path:
    workdir = tmp_path / "w"
    shutil.copytree(ref["workdir"], workdir)
    return workdir


def _steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


# ------------------------------------------------------------------------------ damage
def _plain_restore(item: Path) -> dict:
    """What Orbax alone reads from an item directory (no checksums): {path: array}."""
    with ocp.StandardCheckpointer() as reader:
        tree = reader.restore(item)
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _largest_data_file(item: Path) -> Path:
    item = Path(item)  # the library hands back an etils.epath.Path, which has no recursive glob
    return max((p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def _flip_a_bit_silently(item: Path) -> str:
    """Flips one bit of the item's largest data file where Orbax still reads the file, only
    into other values; returns the name of an array that changed."""
    before = _plain_restore(item)
    data = _largest_data_file(item)
    original = data.read_bytes()
    for fraction in (0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6):
        damaged = bytearray(original)
        damaged[int(len(damaged) * fraction)] ^= 0x04
        data.write_bytes(bytes(damaged))
        try:
            after = _plain_restore(item)
        except Exception:  # noqa: BLE001 - this flip broke the compression: try another
            continue
        changed = [k for k in before if not np.array_equal(before[k], after[k])]
        if changed:
            return changed[0]
    pytest.fail(f"no single bit flip in {data} left a readable file")


def _damage(step_dir: Path, kind: str) -> str:
    """Damages checkpoint `step_dir`'s variables; returns what the reason must mention."""
    item = step_dir / "variables"
    if kind == "bit_flip":
        _flip_a_bit_silently(item)
        return "does not match its checksum"
    if kind == "truncation":
        data = _largest_data_file(item)
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
        return "Error reading"
    (item / "_METADATA").write_bytes(bytes(range(256)) * 4)
    return "_METADATA is not valid JSON"


# ------------------------------------------------------------------------------ defaults
def test_the_default_keeps_the_two_latest_and_the_best(ref):
    assert recipes.get_config().checkpoint.keep_latest == 2
    assert recipes.get_config().checkpoint.keep_best == 1
    # 2 epochs of 2 steps: both epoch ends remain, the best among them
    assert _steps(ref["workdir"]) == [2, 4] and ref["summary"]["best_step"] in (2, 4)
    assert (ref["workdir"] / "checkpoints" / "4" / train_checkpoints.CHECKSUMS_ITEM).is_dir()


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("kind", DAMAGE)
def test_resume_falls_back_to_the_previous_step_and_continues_exactly(ref, tmp_path, caplog, kind,
                                                                     monkeypatch):
    workdir = _copy(ref, tmp_path)
    reason = _damage(workdir / "checkpoints" / "4", kind)

    def no_init(*args, **kwargs):
        raise AssertionError("a resume created a fresh state (the init program)")
    monkeypatch.setattr(train_lib, "create_train_state", no_init)  # restores into shapes only
    with caplog.at_level(logging.WARNING):
        result = train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    unreadable = [w for w in warnings if w.startswith(f"checkpoint {workdir}/checkpoints/4 is unreadable")]
    assert len(unreadable) == 1 and reason in unreadable[0] and "\n" not in unreadable[0], warnings
    assert any(w.startswith("resuming from step 2") and "4.unreadable" in w for w in warnings)
    # the damaged step is kept aside, and the run saved step 4 afresh from step 2
    assert (workdir / "checkpoints" / "4.unreadable").is_dir() and _steps(workdir) == [2, 4]
    params = helpers.flat_params(to_host(result.state.variables))
    assert all(np.array_equal(params[k], ref["params"][k]) for k in ref["params"])
    for got, want in zip(result.summary["history"], ref["summary"]["history"], strict=True):
        assert helpers.without_timings(got) == helpers.without_timings(want)


def test_when_no_step_restores_the_error_names_the_workdir(ref, tmp_path, caplog):
    workdir = _copy(ref, tmp_path)
    for step in (2, 4):
        _damage(workdir / "checkpoints" / str(step), "truncation")
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as error:
        train_lib.train_and_evaluate(helpers.tiny_config(), str(workdir))
    message = str(error.value)
    assert message.startswith(f"{workdir}/checkpoints: none of its checkpoints restores (steps 4, 2")
    assert "\n" not in message and _steps(workdir) == [2, 4]  # nothing renamed: nothing to resume
    assert sum("is unreadable" in r.getMessage() for r in caplog.records) == 2


# ------------------------------------------------------------------ eval, predict, export
def _cli(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("kind", DAMAGE)
def test_eval_predict_export_and_init_from_name_the_damaged_step(ref, tmp_path, capsys, kind):
    workdir = _copy(ref, tmp_path)
    best = ref["summary"]["best_step"]
    other = 2 if best == 4 else 4
    reason = _damage(workdir / "checkpoints" / str(best), kind)
    step_dir = f"{workdir}/checkpoints/{best}"
    expected = (f"{step_dir} is unreadable (", reason,
                f"also holds step {other}: give {workdir}/checkpoints/{other} ")

    data = tmp_path / "data"
    data_fixtures.write_processed(str(data), "test", n=3)
    assert _cli("eval").main(["--checkpoint", str(workdir), "--data_dir", str(data),
                              "--layout", "processed", "--split", "test",
                              "--out", str(tmp_path / "eval.json")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(part in line for part in expected), line
    assert not (tmp_path / "eval.json").exists()

    assert _cli("predict").main(["--checkpoint", str(workdir), "--input", str(data / "test" / "images"),
                                 "--output", str(tmp_path / "masks")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(part in line for part in expected), line

    with pytest.raises(ExportError) as error:
        serving_function(str(workdir))
    assert all(part in str(error.value) for part in expected) and "\n" not in str(error.value)

    with pytest.raises(CheckpointError) as error:  # what train.py prints as "error: ..."
        train_lib.train_and_evaluate(helpers.tiny_config(init_from=str(workdir)),
                                     str(tmp_path / "fine_tune"))
    message = str(error.value)
    assert message.startswith(f"config.init_from={workdir}: {step_dir} is unreadable (")
    assert all(part in message for part in expected) and "\n" not in message


def test_a_fresh_predict_process_prints_the_line_and_no_traceback(ref, tmp_path):
    """As a user runs it: nothing but the one line on stderr beyond the usual log lines (a
    truncated file makes Orbax abandon its other reads, whose callbacks would each print a
    traceback; see format.quiet_abandoned_reads)."""
    workdir = _copy(ref, tmp_path)
    best = ref["summary"]["best_step"]
    _damage(workdir / "checkpoints" / str(best), "truncation")
    data = tmp_path / "data"
    data_fixtures.write_processed(str(data), "test", n=1)
    proc = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--checkpoint", str(workdir),
                           "--input", str(data / "test" / "images"), "--output", str(tmp_path / "m")],
                          env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-4000:]
    line = _one_error_line(proc.stderr)
    assert line.startswith(f"error: {workdir}/checkpoints/{best} is unreadable (")
    assert "Error" not in proc.stderr.replace(line, ""), proc.stderr[-4000:]


def test_the_step_the_error_suggests_can_be_given_as_the_checkpoint(ref, tmp_path):
    workdir = _copy(ref, tmp_path)
    best = ref["summary"]["best_step"]
    other = 2 if best == 4 else 4
    _damage(workdir / "checkpoints" / str(best), "bit_flip")
    older = workdir / "checkpoints" / str(other)
    meta = checkpoints.read_meta(older)  # a step directory borrows its workdir's hanet.json
    assert meta["kind"] == "workdir" and meta["step"] == other
    assert meta["model"] == checkpoints.read_meta(workdir)["model"]
    got = {jax.tree_util.keystr(p): np.asarray(v)
           for p, v in jax.tree_util.tree_flatten_with_path(load_variables(older))[0]}
    want = _plain_restore(ref["workdir"] / "checkpoints" / str(other) / "variables")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)

    data = tmp_path / "data"
    data_fixtures.write_processed(str(data), "test", n=3)
    assert _cli("predict").main(["--checkpoint", str(older), "--input", str(data / "test" / "images"),
                                 "--output", str(tmp_path / "masks")]) == 0
    assert len(list((tmp_path / "masks").iterdir())) == 3
    with pytest.raises(CheckpointError, match=r"checkpoints/3 is not a complete checkpoint; .* "
                                              r"holds steps 4, 2"):
        train_checkpoints.restore_step_variables(workdir, 3)


# ------------------------------------------------------------------------ other damage
def test_a_garbled_metrics_file_is_named_then_set_aside_by_a_resuming_run(ref, tmp_path, caplog):
    workdir = _copy(ref, tmp_path)
    metrics = workdir / "checkpoints" / "4" / "metrics" / "metrics"
    metrics.write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointError) as error:
        train_checkpoints.restore_best_variables(workdir)
    assert str(error.value).startswith(f"{metrics} is not valid JSON") and "\n" not in str(error.value)
    with caplog.at_level(logging.WARNING):
        with train_checkpoints.make_manager(workdir) as manager:
            assert manager.all_steps() == [2]
    assert any(f"{workdir}/checkpoints/4 is unreadable ({metrics} is not valid JSON" in r.getMessage()
               for r in caplog.records)
    assert (workdir / "checkpoints" / "4.unreadable").is_dir()


def test_exported_checkpoints_carry_checksums_too(ref, tmp_path):
    variables = to_host(ref["result"].variables)
    model_cfg = checkpoints.read_meta(ref["workdir"])["model"]
    exported = checkpoints.save_variables(tmp_path / "exported", variables, model_cfg=model_cfg,
                                          image_size=(32, 32))
    assert (exported / checkpoints.CHECKSUMS_FILE).is_file()
    assert jax.tree.all(jax.tree.map(np.array_equal, load_variables(exported), variables))
    _flip_a_bit_silently(exported / checkpoints.VARIABLES_DIR)
    with pytest.raises(CheckpointError, match="does not match its checksum") as error:
        load_variables(exported)
    assert str(exported / checkpoints.VARIABLES_DIR) in str(error.value)
    (exported / checkpoints.CHECKSUMS_FILE).unlink()  # as written before checksums existed
    load_variables(exported)  # unchecked, as before


# ---------------------------------------------------------------- before checksums existed
def _save_without_checksums(manager, state, meta, metrics) -> None:
    """What `checkpoints.training.save` wrote before checksums existed."""
    variables, train = train_checkpoints._split(state)
    manager.save(int(meta["step"]), args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(dict(meta))), metrics=metrics, force=True)


def test_a_checkpoint_written_without_checksums_still_restores(ref, tmp_path):
    old = tmp_path / "old"
    with train_checkpoints.make_manager(ref["workdir"], read_only=True) as manager:
        state, meta = train_checkpoints.restore_latest(manager, _fresh_state())
        metrics = manager.metrics(manager.latest_step())
    checkpoints.write_meta(old, kind="workdir", **_meta_fields(ref["workdir"]))
    with train_checkpoints.make_manager(old, async_save=False) as manager:
        _save_without_checksums(manager, state, meta, metrics)
    assert not (old / "checkpoints" / "4" / train_checkpoints.CHECKSUMS_ITEM).exists()
    variables = load_variables(old)
    want = to_host(state.eval_variables)
    assert jax.tree.all(jax.tree.map(np.array_equal, to_host(variables), want))
    with train_checkpoints.make_manager(old) as manager:
        restored, restored_meta = train_checkpoints.restore_latest(manager, _fresh_state())
    assert restored_meta["step"] == 4 and int(restored.step) == 4
    assert jax.tree.all(jax.tree.map(np.array_equal, to_host(restored.opt_state),
                                     to_host(state.opt_state)))


def _fresh_state():
    """A fresh training state of the tiny config: the shapes and placement to restore into."""
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import make_mesh
    from hanet_jax.train.state import create_train_state

    config = helpers.tiny_config()
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    return create_train_state(model, config.model.image_size, tx, plateau, config.seed,
                              make_mesh())


def _meta_fields(workdir) -> dict:
    meta = checkpoints.read_meta(workdir)
    return {"model_cfg": meta["model"], "image_size": meta["image_size"]}
