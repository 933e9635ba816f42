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
