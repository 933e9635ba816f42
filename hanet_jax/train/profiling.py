"""`--config.profile_steps=START,COUNT`: a `jax.profiler` trace of training steps START to
START+COUNT-1, written to WORKDIR/profile.

The loop calls `before(step)` and `after(step, outputs)` around each training step (`step` is
the global step index the step runs, 0 for the first one) and `close()` when it ends, however it
ends. The trace starts before step START (or the first step after it, for a run resumed inside
the range) and stops after step START+COUNT-1, once that step's outputs are ready, so the
device's work is in the trace. A run that ends or is interrupted first stops it in `close()`:
the trace then holds the steps that ran. Step 0 compiles the step: START >= 1 profiles the steady
state.

The folder holds what `jax.profiler` writes: `plugins/profile/<time>/<host>.xplane.pb` for
TensorBoard's profile tab (`pip install tensorboard-plugin-profile`, then
`tensorboard --logdir WORKDIR/profile`), and `<host>.trace.json.gz` and `perfetto_trace.json.gz`
for https://ui.perfetto.dev. With several processes each writes its own
WORKDIR/profile/process_<i>. A bucket workdir (`gs://...`) is traced into a local temporary
folder, copied into WORKDIR/profile through `hanet_jax.storage` when the trace stops, then
deleted (the profiler writes local files only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import jax
from absl import logging

from hanet_jax import storage

PROFILE_DIR = "profile"


def parse_profile_steps(spec: str | None) -> tuple[int, int] | None:
    """"START,COUNT" -> (START, COUNT); "" or None -> None (no profiling). ValueError naming
    the value otherwise (START >= 0, COUNT >= 1, integers)."""
    if spec is None or not str(spec).strip():
        return None
    parts = [p.strip() for p in str(spec).split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        start, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"config.profile_steps must be '' (off) or 'START,COUNT' (two integers, "
                         f"e.g. '10,5'), got {spec!r}") from None
    if start < 0 or count < 1:
        raise ValueError(f"config.profile_steps={spec!r}: START must be >= 0 and COUNT >= 1")
    return start, count


class StepProfiler:
    """Traces steps [START, START+COUNT) of a training loop with `jax.profiler`.

        profiler = StepProfiler(workdir, config.profile_steps)
        try:
            for step, batch in batches:
                profiler.before(step)
                state, metrics = train_step(state, batch)
                profiler.after(step, (state, metrics))
        finally:
            profiler.close()

    With an empty spec every method does nothing. Each process traces its own host.
    """

    def __init__(self, workdir: str | os.PathLike, spec: str | tuple[int, int] | None):
        window = spec if isinstance(spec, tuple) else parse_profile_steps(spec)
        self.start, self.count = window if window else (0, 0)
        self.enabled = window is not None
        self.active = False
        self.done = False
        self.traced_steps: list[int] = []
        target = storage.path(workdir) / PROFILE_DIR
        if jax.process_count() > 1:
            target = target / f"process_{jax.process_index()}"
        self.target = target
        self.remote = storage.is_remote(workdir)
        self.trace_dir: str | None = None  # where jax.profiler writes (local)

    @property
    def end(self) -> int:
        """The first step after the window."""
        return self.start + self.count

    def before(self, step: int) -> None:
        """Starts the trace if `step` is the window's first step (or the first step run inside
        it, after a resume)."""
        if not self.enabled or self.active or self.done or not self.start <= step < self.end:
            return
        if self.remote:
            self.trace_dir = tempfile.mkdtemp(prefix="hanet-profile-")
        else:
            self.target.mkdir(parents=True, exist_ok=True)
            self.trace_dir = os.fspath(self.target)
        try:
            jax.profiler.start_trace(self.trace_dir, create_perfetto_trace=True)
        except RuntimeError as e:  # another trace is running (someone else's start_trace)
            logging.warning("profile_steps: could not start the jax.profiler trace at step %d "
                            "(%s); no profile this run", step, e)
            self._discard_local()
            self.done = True
            return
        self.active = True
        logging.info("profile_steps: tracing steps %d to %d with jax.profiler", step, self.end - 1)

    def after(self, step: int, outputs: Any = None) -> None:
        """Notes that `step` ran; after the window's last step, waits for `outputs` (the step's
        results, so its device work is in the trace) and stops the trace."""
        if not self.active:
            return
        self.traced_steps.append(step)
        if step + 1 >= self.end:
            if outputs is not None:
                jax.block_until_ready(outputs)
            self._stop()

    def close(self) -> None:
        """Stops a trace still running (a run that ended or was interrupted inside the window).
        Safe to call more than once."""
        if self.active:
            logging.warning("profile_steps: the run stopped inside the profiled steps; the trace "
                            "holds steps %s", self._steps_text())
            self._stop()

    def __enter__(self) -> "StepProfiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------
    def _steps_text(self) -> str:
        if not self.traced_steps:
            return "none (stopped before the first profiled step finished)"
        return f"{self.traced_steps[0]} to {self.traced_steps[-1]}"

    def _stop(self) -> None:
        self.active, self.done = False, True
        try:
            jax.profiler.stop_trace()
        except Exception as e:  # noqa: BLE001 - never fail a training run over its profile
            logging.warning("profile_steps: stopping the jax.profiler trace failed: %s", e)
            self._discard_local()
            return
        if self.remote:
            try:
                self._copy()
            finally:
                self._discard_local()
        logging.info(
            "profile_steps: jax.profiler trace of steps %s written to %s; view it with "
            "`tensorboard --logdir %s` (profile tab; pip install tensorboard-plugin-profile) or "
            "open plugins/profile/*/perfetto_trace.json.gz at https://ui.perfetto.dev",
            self._steps_text(), self.target, self.target)

    def _copy(self) -> None:
        """The local trace folder's files into the bucket's WORKDIR/profile."""
        storage.copy_local_tree(self.trace_dir, self.target)

    def _discard_local(self) -> None:
        if self.remote and self.trace_dir:
            shutil.rmtree(self.trace_dir, ignore_errors=True)
