"""Data parallelism: 8 simulated devices, and two processes over jax.distributed (gloo), train
the tiny config and must match this process's one-device run; a SIGTERM to one of the two
processes stops both at one step, and the rerun resumes to the uninterrupted run bit for bit.

"Within float tolerance" is measured, not guessed: the same one-device run fed every batch in
reverse order is the same mathematical step (the loss and the batch-wide BatchNorm do not care
about the order; dropout is off for this, its masks follow the batch position), so its distance from the plain run is what rounding alone does to this
config. On the tiny config that distance is large (~3e-3 relative on step-1 gradients): 32x32
inputs leave 1x1 maps from conv4 on, where BatchNorm normalises 8 values, and Adam (eps 1e-9)
turns near-zero gradients into full-size steps of either sign. Sharding only reorders the
reductions too, so the multi-device runs must stay within a small multiple of that distance.
The first step's loss is tighter (1e-5): the forward pass is not chaotic. Two processes against
each other: bitwise identical (replicated state, one program).
"""

import subprocess

import jax
import numpy as np
import pytest

import _train_helpers as helpers
from hanet_jax.ops.cpu import conv as cpu_conv
from hanet_jax.ops.cpu import settings, targets

pytestmark = pytest.mark.slow  # every test here trains in subprocesses or on 8 devices

NUM_STEPS = 4


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return helpers.reference_run(tmp_path_factory)


@pytest.fixture(scope="module")
def ref_steps(ref):
    return helpers.run_steps(helpers.tiny_config(), NUM_STEPS)


@pytest.fixture(scope="module")
def rounding(ref_steps):
    """How far rounding alone moves the one-device run: (per-step |loss| gaps, max weight gap).

    Without dropout: its masks follow the batch position, so a reversed batch would change them.
    """
    config = helpers.tiny_config(model__dropout_rate=0.0)
    plain, plain_params = helpers.run_steps(config, NUM_STEPS)
    losses, params = helpers.run_steps(config, NUM_STEPS, reverse_batches=True)
    gaps = [abs(a - b) for a, b in zip(losses, plain, strict=True)]
    return gaps, helpers.max_param_difference(params, plain_params)


def _within_rounding(losses, ref_losses, params, ref_params, rounding, what, first_step=True):
    gaps, weight_gap = rounding
    got = [abs(a - b) for a, b in zip(losses, ref_losses, strict=True)]
    got_weights = helpers.max_param_difference(params, ref_params)
    print(f"\n{what}: loss gaps {['%.1e' % g for g in got]}, max weight gap {got_weights:.1e}; "
          f"rounding alone (reversed batches): {['%.1e' % g for g in gaps]}, {weight_gap:.1e}")
    if first_step:  # losses[0] is the first forward pass: no chaos yet
        assert got[0] <= 1e-5 * abs(ref_losses[0])
    # The later steps: within a few times what rounding alone does (the floor keeps a lucky
    # near-zero rounding gap from failing the test).
    assert max(got) <= 4 * max(gaps) + 1e-5 and got_weights <= 4 * weight_gap + 1e-6


def test_eight_devices_match_one_device(ref_steps, rounding, tmp_path):
    out = tmp_path / "out.npz"
    subprocess.run(helpers.worker_command(tmp_path / "w", out, steps_only=NUM_STEPS), check=True,
                   env=helpers.subprocess_env(devices=8), timeout=500)
    params, info = helpers.load_result(out)
    assert info["devices"] == 8 and len(info["losses"]) == NUM_STEPS
    _within_rounding(info["losses"], ref_steps[0], params, ref_steps[1], rounding,
                     "8 devices vs 1")


def _lowered_step_text(config) -> str:
    """The StableHLO of train.py's step for `config` on this process's devices."""
    from hanet_jax.data import pipeline
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import make_mesh
    from hanet_jax.train.state import abstract_train_state
    from hanet_jax.train.steps import compiled_steps

    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    mesh = make_mesh()
    state = abstract_train_state(model, config.model.image_size, tx, plateau, mesh)
    size = config.model.image_size
    batch = pipeline.to_global_batch({"image": np.zeros((config.batch_size, size, size, 3), np.float32),
                                      "mask": np.zeros((config.batch_size, size, size, 1), np.float32)}, mesh)
    return compiled_steps(model, config.loss, tx, mesh).train.lower(state, batch).as_text()


@pytest.mark.skipif(not cpu_conv.available(), reason="no C++ compiler / scipy OpenBLAS")
def test_training_with_the_handlers_off_matches_them_on(ref_steps, rounding):
    """The same steps with XLA's ops everywhere (an export's or a GPU's path) and with the CPU
    handlers (this machine's default): the same training, to rounding."""
    config = helpers.tiny_config()
    assert any(t in _lowered_step_text(config) for t in targets.CPU_ONLY)
    with settings.disabled():
        assert not any(t in _lowered_step_text(config) for t in targets.CPU_ONLY)
        losses, params = helpers.run_steps(config, NUM_STEPS)
    _within_rounding(losses, ref_steps[0], params, ref_steps[1], rounding, "handlers off vs on")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The tiny config trained by two jax.distributed processes together, uninterrupted:
    (workdir, [(params, summary) of process 0, of process 1]). The SIGTERM test below resumes
    to this run; one run serves both (each costs about 100 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("two_processes")
    port, workdir = helpers.free_port(), tmp / "w"
    helpers.run_processes([helpers.worker_command(workdir, tmp / f"out{i}.npz", num_processes=2,
                                                  process_id=i, port=port) for i in range(2)])
    return workdir, [helpers.load_result(tmp / f"out{i}.npz") for i in range(2)]


def test_two_processes_train_together_and_match_one_process(ref, ref_steps, rounding,
                                                            two_processes):
    workdir, ((p0, s0), (p1, s1)) = two_processes
    assert (s0["process_index"], s1["process_index"]) == (0, 1)
    assert p0.keys() == p1.keys() and all(np.array_equal(p0[k], p1[k]) for k in p0)
    assert s0["history"] == s1["history"] or all(
        helpers.without_timings(a) == helpers.without_timings(b)
        for a, b in zip(s0["history"], s1["history"], strict=True))
    assert (s0["devices"], s0["processes"], s0["steps"]) == (2, 2, ref["summary"]["steps"])
    # The reference run's 4 steps are run_steps' 4 steps (same programs, same batches).
    assert helpers.max_param_difference(ref["params"], ref_steps[1]) == 0
    train = [r["train_loss"] for r in s0["history"]]  # per epoch: means over 2 steps
    ref_train = [r["train_loss"] for r in ref["summary"]["history"]]
    _within_rounding(train, ref_train, p0, ref["params"], rounding, "2 processes vs 1",
                     first_step=False)
    assert (workdir / "summary.json").exists()  # written once, by process 0
    # Saved over two processes' devices, read back here on one (as eval.py and predict.py do).
    from hanet_jax.checkpoints import loading as checkpoints_loading
    bundle = checkpoints_loading.load_bundle(workdir)
    leaves = [leaf for tree in bundle.variables.values() for leaf in jax.tree.leaves(tree)]
    assert leaves and all(len(leaf.sharding.device_set) == 1 for leaf in leaves)
    x = np.zeros((1, *bundle.image_size, 3), np.float32)
    assert np.isfinite(np.asarray(bundle.model.apply(bundle.variables, x, train=False))).all()


def test_a_sigterm_to_one_of_two_processes_stops_both_at_one_step_then_resumes_exactly(
        two_processes, tmp_path):
    """JAX's preemption sync point: process 1 alone gets SIGTERM before step 0; both processes
    save the same step, both exit 143, and rerunning both resumes to the uninterrupted
    two-process run, bit for bit."""
    import signal

    def two(workdir, out, **extra):
        port = helpers.free_port()
        return [helpers.worker_command(workdir, tmp_path / f"{out}{i}.npz", num_processes=2, process_id=i,
                                       port=port, **extra) for i in range(2)]

    prefix, workdir = tmp_path / "handshake", tmp_path / "w"
    procs = [subprocess.Popen(cmd, env=helpers.subprocess_env(devices=1), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for cmd in two(workdir, "stopped", sigterm_handshake=prefix, sigterm_process=1)]
    errors = helpers.signal_at_handshake(procs, prefix, signal.SIGTERM, target=1)
    assert [p.returncode for p in procs] == [143, 143], [e[-3000:] for e in errors]
    stopped = [helpers.load_result(tmp_path / f"stopped{i}.npz")[1] for i in range(2)]
    assert stopped[0]["preempted_at_step"] == stopped[1]["preempted_at_step"]
    from hanet_jax.checkpoints import training as train_checkpoints
    with train_checkpoints.make_manager(workdir, read_only=True) as manager:
        assert manager.all_steps() == [stopped[0]["preempted_at_step"]]
    helpers.run_processes(two(workdir, "resumed"))
    plain, resumed = two_processes[1][0], helpers.load_result(tmp_path / "resumed0.npz")
    assert plain[0].keys() == resumed[0].keys()
    assert all(np.array_equal(plain[0][k], resumed[0][k]) for k in plain[0])
    assert resumed[1]["final_train_loss"] == plain[1]["final_train_loss"]
    print(f"\nSIGTERM to process 1 of 2: exit statuses {[p.returncode for p in procs]}, both saved "
          f"step {stopped[0]['preempted_at_step']}; rerun's final loss {resumed[1]['final_train_loss']!r}"
          f" == uninterrupted {plain[1]['final_train_loss']!r}, weights bitwise equal")
