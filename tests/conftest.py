"""Shared test set-up: quiet TensorFlow, keep JAX on the CPU (the package is installed: pip install -e '.[test]')."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


# The files that hold the longest tests (the `--durations` of a full run on 2 cores), started
# first: `--dist loadfile` hands whole files to the workers in collection order
# (`--no-loadscope-reorder` in pytest.ini), so a long file picked up last would leave the other
# worker idle at the end. The rest follow, the files with most tests first (xdist's own order).
LONG_FILES = ("test_train_distributed_faults.py", "test_train_distributed.py",
              "test_accelerator_check.py", "test_without_tensorflow.py", "test_lowering.py",
              "test_bench.py", "test_gcs_workdir.py", "test_parity_keras.py",
              "test_architectures.py")


def pytest_collection_modifyitems(session, config, items):
    del session, config
    count: dict[str, int] = {}
    for item in items:
        count[item.fspath.basename] = count.get(item.fspath.basename, 0) + 1

    def rank(item):
        name = item.fspath.basename
        return (LONG_FILES.index(name), 0) if name in LONG_FILES else (len(LONG_FILES), -count[name])

    items.sort(key=rank)  # stable: each file's tests keep their order
