"""Shared kit of the training tests: the tiny config, one reference run, subprocess plumbing.

Compilation dominates these tests (the full DenseNet-121 is always built), so:
- every test trains the same tiny config (the smoke config at 32x32: batch 8, 2 epochs of 2
  steps), and the jitted steps are cached in-process by `train.steps.compiled_steps`;
- `reference_run` trains it once per pytest session (memoised here, shared by test modules);
- XLA executables go to the session's persistent compilation cache (tests/conftest.py puts
  `.pytest_cache/d/hanet_xla` in the environment of this process and every subprocess), so a
  subprocess that compiles what the test process already compiled loads it instead, and a
  second test session compiles nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "_train_worker.py"

# The smoke config, made smaller: 32x32 inputs, so a 1x1 bottleneck grid, and one dense layer
# per encoder block (the trainer's logic does not depend on depth; DenseNet-121's full depth is
# compiled by the model, parity and port tests). The full variant keeps the TAM's dropout
# (device-count invariance of the dropout masks is tested).
TINY = {"model.image_size": 32, "model.encoder_blocks": (1, 1, 1, 1), "num_epochs": 2,
        "data.n_train": 16, "data.n_val": 8, "batch_size": 8, "log_every_steps": 1,
        "num_overlays": 2}


def load_module(path, name: str):
    """The Python file at `path` imported as module `name` (and registered under it), without
    adding its folder to the import path: configs and the scripts under scripts/."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_config(name: str, *args):
    if name == "base":  # the shared base every config starts from (not a launchable file)
        from hanet_jax.train import recipes
        return recipes.get_config(*args)
    return load_module(ROOT / "configs" / f"{name}.py", f"_cfg_{name}").get_config(*args)


def tiny_config(**overrides):
    """The smoke config with TINY applied, then `overrides` ("a__b" means "a.b")."""

    config = load_config("smoke")
    config.update_from_flattened_dict({**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})
    return config


def subprocess_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def run_python(code: str, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """`python -c code` (dedented) on the CPU with this repo importable and `env` added."""
    import textwrap
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a jax.distributed coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(commands: list[list[str]], timeout: float = 500, devices: int = 1) -> list[str]:
    """Runs the commands together (one jax.distributed process each), waits for all, asserts
    each exited 0 and returns their stderr."""
    procs = [subprocess.Popen(cmd, env=subprocess_env(devices=devices), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    errors = []
    try:
        for proc in procs:
            errors.append(proc.communicate(timeout=timeout)[1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-6000:]
    return errors


def signal_at_handshake(procs: list[subprocess.Popen], prefix, sig, *, target: int = 0,
                        timeout: float = 400) -> list[str]:
    """Workers started with `--sigterm_handshake PREFIX`: waits until one writes PREFIX.ready
    (it is about to run its step, handlers installed), sends `sig` to `procs[target]`, lets it
    go on (PREFIX.sent), waits for every process and returns their stderr."""
    import time

    try:
        deadline = time.time() + timeout
        while not os.path.exists(f"{prefix}.ready"):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-3000:] for p in procs]
            assert time.time() < deadline, "no worker reached the handshake's step"
            time.sleep(0.1)
        os.kill(procs[target].pid, sig)
        Path(f"{prefix}.sent").touch()
        return [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def worker_command(workdir, out, **options) -> list[str]:
    """`python tests/_train_worker.py` with its options (see that file)."""
    cmd = [sys.executable, str(WORKER), "--workdir", str(workdir), "--out", str(out)]
    for key, value in options.items():
        if value is True:  # a flag
            cmd.append(f"--{key}")
        elif value is not None:
            cmd += [f"--{key}", str(value)]
    return cmd


def run_worker(workdir, out, *, devices: int = 1, timeout: float = 400, **options):
    proc = subprocess.run(worker_command(workdir, out, **options), env=subprocess_env(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return load_result(out)


# ------------------------------------------------------------------------------ results
# An epoch's timings differ between runs (and an epoch resumed at its end has none): the rows
# of two runs are compared without them.
TIMINGS = ("images_per_second", "step_time_s", "mfu")


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMINGS}


def flat_params(variables) -> dict[str, np.ndarray]:
    from flax import traverse_util

    flat = traverse_util.flatten_dict({"params": variables["params"],
                                       "batch_stats": variables["batch_stats"]})
    return {"/".join(k): np.asarray(v) for k, v in flat.items()}


def save_result(out, state, summary) -> None:
    from hanet_jax.train.sharding import to_host

    np.savez(out, **flat_params(to_host(state.variables)))
    Path(f"{out}.json").write_text(json.dumps(summary))


def load_result(out):
    with np.load(out) as f:
        params = {k: f[k] for k in f.files}
    return params, json.loads(Path(f"{out}.json").read_text())


def run_steps(config, num_steps: int, *, reverse_batches: bool = False):
    """`num_steps` training steps of `config` through the library's own pieces (state, jitted
    step, input pipeline, global batches) on every device: (per-step losses, final params).

    `reverse_batches` feeds every batch in reverse order: the same mathematical step (the loss
    and BatchNorm are invariant to it), only its floating-point reductions run in another order.
    It measures how far rounding alone moves the run."""
    from hanet_jax.train import input as train_data
    from hanet_jax.data import pipeline
    from hanet_jax.models.architectures import model_from_config
    from hanet_jax.train.init_from import resolve_model_config
    from hanet_jax.train.optimizer import optimizer_from_config
    from hanet_jax.train.sharding import make_mesh, to_host
    from hanet_jax.train.state import create_train_state
    from hanet_jax.train.steps import compiled_steps

    import jax

    data = train_data.build_data(config)
    model = model_from_config(resolve_model_config(config.model.to_dict(), config.init_from))
    tx, plateau, _ = optimizer_from_config(config.optimizer)
    mesh = make_mesh()
    state = create_train_state(model, config.model.image_size, tx, plateau, config.seed, mesh)
    steps = compiled_steps(model, config.loss, tx, mesh, augment=data.augment, seed=config.seed)
    losses = []
    for step, local in pipeline.iterate_batches(
            data.train, global_batch_size=config.batch_size, seed=config.seed,
            process_index=jax.process_index(), process_count=jax.process_count()):
        if step == num_steps:
            break
        if reverse_batches:
            local = {k: v[::-1].copy() for k, v in local.items()}
        state, metrics = steps.train(state, pipeline.to_global_batch(local, mesh))
        losses.append(float(metrics.loss.total))
    return losses, flat_params(to_host(state.variables))


_REFERENCE: dict = {}


def reference_run(tmp_path_factory):
    """The tiny config trained once, uninterrupted, in this process: (workdir, params, summary)."""
    if not _REFERENCE:
        from hanet_jax.train import loop as train_lib

        workdir = tmp_path_factory.mktemp("reference")
        result = train_lib.train_and_evaluate(tiny_config(), str(workdir))
        from hanet_jax.train.sharding import to_host

        _REFERENCE.update(workdir=workdir, params=flat_params(to_host(result.state.variables)),
                          summary=result.summary, result=result)
    return _REFERENCE


def assert_params_close(a: dict, b: dict, *, atol: float, stats_rtol: float) -> None:
    """Weights within `atol`; BatchNorm running statistics within `atol` + `stats_rtol`·|b|."""
    assert a.keys() == b.keys()
    for key in a:
        tol = atol if key.startswith("params/") else stats_rtol * np.abs(b[key]) + atol
        excess = float(np.max(np.abs(a[key] - b[key]) - tol))
        assert excess <= 0, f"{key} differs beyond tolerance by {excess}"


def max_param_difference(a: dict, b: dict) -> float:
    """The largest absolute difference over every weight (not the BatchNorm statistics)."""
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a if k.startswith("params/"))
