"""`config.profile_steps`: the spec's parsing, and a jax.profiler trace of the right steps in
WORKDIR/profile from a tiny jitted loop (local, a bucket-like workdir, a run cut short)."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from hanet_jax import storage
from hanet_jax.train import profiling


def _trace_files(folder) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*")
                  if p.name.endswith((".xplane.pb", ".trace.json.gz")))


def _run(profiler, steps, first=0):
    step_fn = jax.jit(lambda x: jnp.tanh(x @ x) + 1.0)
    x = jnp.full((64, 64), 0.01)
    for step in range(first, first + steps):
        profiler.before(step)
        x = step_fn(x)
        profiler.after(step, x)
    return x


@pytest.mark.parametrize("spec, expected", [
    ("", None), (None, None), ("  ", None), ("10,5", (10, 5)), (" 0 , 1 ", (0, 1)),
])
def test_parse(spec, expected):
    assert profiling.parse_profile_steps(spec) == expected


@pytest.mark.parametrize("spec", ["5", "a,b", "1,0", "-1,2", "1,2,3", "1.5,2", "1;2"])
def test_parse_errors_name_the_value(spec):
    with pytest.raises(ValueError, match="profile_steps"):
        profiling.parse_profile_steps(spec)


def test_a_window_of_steps_is_traced_into_workdir_profile(tmp_path):
    profiler = profiling.StepProfiler(tmp_path, "2,3")
    _run(profiler, 8)
    assert profiler.traced_steps == [2, 3, 4] and not profiler.active and profiler.done
    files = _trace_files(tmp_path / "profile")
    assert any(f.name.endswith(".xplane.pb") for f in files), files
    assert any(f.name.endswith(".trace.json.gz") for f in files), files
    assert all(f.stat().st_size > 0 for f in files)
    assert list((tmp_path / "profile" / "plugins" / "profile").iterdir())  # TensorBoard's layout
    profiler.close()  # nothing left to stop
    assert len(_trace_files(tmp_path / "profile")) == len(files)


def test_a_run_that_ends_inside_the_window_still_writes_its_trace(tmp_path):
    with profiling.StepProfiler(tmp_path, "1,100") as profiler:
        _run(profiler, 3)
        assert profiler.active
    assert profiler.traced_steps == [1, 2] and not profiler.active
    assert _trace_files(tmp_path / "profile")
    # another trace can start afterwards: the profiler session was released
    again = profiling.StepProfiler(tmp_path / "again", "0,1")
    _run(again, 2)
    assert again.traced_steps == [0] and _trace_files(tmp_path / "again" / "profile")


def test_an_interrupted_step_stops_the_trace_in_close(tmp_path):
    profiler = profiling.StepProfiler(tmp_path, "0,5")
    with pytest.raises(KeyboardInterrupt):
        try:
            profiler.before(0)
            raise KeyboardInterrupt
        finally:
            profiler.close()
    assert not profiler.active and profiler.traced_steps == []
    assert _trace_files(tmp_path / "profile")


def test_a_resumed_run_traces_the_rest_of_the_window(tmp_path):
    profiler = profiling.StepProfiler(tmp_path, "2,4")
    _run(profiler, 4, first=4)  # resumed at step 4: steps 4 and 5 are in the window
    assert profiler.traced_steps == [4, 5]


def test_no_spec_no_trace(tmp_path):
    profiler = profiling.StepProfiler(tmp_path, "")
    _run(profiler, 3)
    profiler.close()
    assert not profiler.enabled and profiler.traced_steps == []
    assert not (tmp_path / "profile").exists()


def test_a_bucket_workdir_is_traced_locally_and_copied(tmp_path, monkeypatch):
    # A workdir that storage treats as remote (here a local folder standing in for gs://): the
    # trace goes to a local temporary folder, copied into WORKDIR/profile, then deleted.
    monkeypatch.setattr(storage, "is_remote", lambda p: True)
    workdir = tmp_path / "bucket" / "run"
    profiler = profiling.StepProfiler(workdir, "1,2")
    _run(profiler, 4)
    assert profiler.traced_steps == [1, 2]
    assert profiler.trace_dir and not os.path.exists(profiler.trace_dir)
    files = _trace_files(workdir / "profile")
    assert any(f.name.endswith(".xplane.pb") for f in files), files
