#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs the package with the exact pins of
# requirements-test.txt (requirements.txt's runtime pins, the test tools, the ONNX converter).
# Source it: `source scripts/setup_env.sh`. HANET_VENV picks the folder (default .venv).
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HANET_VENV="${HANET_VENV:-$_root/.venv}"
_py="${PYTHON:-python3}"
if [ ! -x "$HANET_VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $HANET_VENV" >&2
  "$_py" -m venv "$HANET_VENV"
  "$HANET_VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
# Reinstall only when pyproject.toml (ranges, extras, console scripts) or a pin file changes.
_stamp="$HANET_VENV/.hanet-requirements.sha"
_want="$(cat "$_root"/pyproject.toml "$_root"/requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  echo "[setup] installing hanet-jax and its requirements into $HANET_VENV" >&2
  (cd "$_root" && "$HANET_VENV/bin/python" -m pip install -q -r requirements-test.txt) >&2
  echo "$_want" > "$_stamp"
fi
export PATH="$HANET_VENV/bin:$PATH"
# Quieter TensorFlow logs; tf.data must not grab an accelerator JAX wants.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
set +euo pipefail
