"""Run code as on a host without TensorFlow: a folder first on PYTHONPATH holds a `tensorflow`
package whose import raises ImportError, so `import tensorflow` fails there as where it is not
installed (everything else imports as usual). For subprocesses only: a process that already
imported TensorFlow cannot forget it.

    done = run_without_tensorflow("import hanet_jax.train.tensorboard", tmp_path)
    assert done.returncode == 0, done.stderr
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "No module named 'tensorflow' (blocked by tests/_no_tensorflow.py)"


def blocker(folder) -> Path:
    """`folder`/no_tensorflow/tensorflow/__init__.py raising ImportError; returns the folder to
    put first on PYTHONPATH."""
    path = Path(folder) / "no_tensorflow"
    package = path / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"raise ImportError({MESSAGE!r})\n")
    return path


def env_without_tensorflow(folder, base: dict | None = None, **extra) -> dict:
    """An environment (`base`, by default os.environ, plus `extra`) in which `import tensorflow`
    raises ImportError; the repository stays importable and JAX stays on the CPU."""
    env = dict(os.environ if base is None else base)
    paths = [str(blocker(folder)), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(paths), JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def run_without_tensorflow(code: str, folder, timeout: float = 300,
                           **extra) -> subprocess.CompletedProcess:
    """`python -c code` (dedented) with TensorFlow blocked (`env_without_tensorflow`)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          env=env_without_tensorflow(folder, **extra), capture_output=True,
                          text=True, timeout=timeout)
