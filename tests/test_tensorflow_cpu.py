"""TensorFlow never takes an accelerator: every module of ours imports it through
`hanet_jax.tensorflow_cpu`, which hides GPUs and TPUs from it before any device exists."""

import json
import re
from pathlib import Path

from _train_helpers import ROOT, run_python


def test_it_hides_gpus_and_tpus_from_tensorflow(monkeypatch):
    import tensorflow as tf

    from hanet_jax import tensorflow_cpu

    hidden = []
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind: hidden.append((list(devices), kind)))
    tensorflow_cpu.tensorflow.cache_clear()
    try:
        assert tensorflow_cpu.tensorflow() is tf
    finally:
        tensorflow_cpu.tensorflow.cache_clear()
    assert hidden == [([], "GPU"), ([], "TPU")]


def test_the_pipeline_leaves_tensorflow_only_the_cpu():
    done = run_python("""
        import json
        import hanet_jax.data.pipeline  # noqa: F401  (what train.py imports first)
        import tensorflow as tf
        print(json.dumps(sorted({d.device_type for d in tf.config.get_visible_devices()})))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["CPU"]


def test_no_module_imports_tensorflow_directly():
    # `import tensorflow as tf` inside a function is fine where TF is not a pipeline's (the Keras
    # side of the benchmark); at module level it must come through tensorflow_cpu.
    offenders = []
    for path in (ROOT / "hanet_jax").rglob("*.py"):
        for line in Path(path).read_text().splitlines():
            if re.match(r"(import tensorflow\b|from tensorflow\b)", line):
                offenders.append(f"{path.relative_to(ROOT)}: {line}")
    assert offenders == []
