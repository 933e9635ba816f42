"""Shared test set-up: quiet TensorFlow, keep JAX on the CPU (the package is installed: pip install -e '.[test]')."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_configure(config):
    """One persistent XLA compilation cache for the session (`.pytest_cache/d/hanet_xla`), in this
    process and, through the environment, in every subprocess a test starts: a CLI run that trains,
    resumes, evaluates and predicts compiles each step once, as a user's second command would.
    A cache set in the environment is kept."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import tempfile

    cache = getattr(config, "cache", None)
    path = cache.mkdir("hanet_xla") if cache is not None else tempfile.mkdtemp(prefix="hanet_xla")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)


def pytest_collection_modifyitems(config, items):
    """The files with the most `slow` tests first, then by test count (stable within a file).

    pytest.ini hands whole files to the workers (`--dist loadfile`, `--no-loadscope-reorder`), so
    this is the order they are dealt in. xdist's own order, by test count alone, dealt the few
    long multi-process files last, and one worker ran them while the other idled (2026-12-07,
    2 cores: 1639 s of wall time for 3051 s of work). Every worker computes the same order."""
    slow, count = {}, {}
    for item in items:
        path = item.nodeid.split("::")[0]
        count[path] = count.get(path, 0) + 1
        slow[path] = slow.get(path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (-slow[item.nodeid.split("::")[0]],
                                 -count[item.nodeid.split("::")[0]], item.nodeid.split("::")[0]))
