#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs the package with its pinned
# requirements and the test extra (`pip install -e '.[test]'`).
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
# Reinstall only when pyproject.toml (the pins, extras and console scripts) changes.
_stamp="$HANET_VENV/.hanet-requirements.sha"
_want="$(cat "$_root"/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  echo "[setup] installing hanet-jax and its requirements into $HANET_VENV" >&2
  "$HANET_VENV/bin/python" -m pip install -q -e "$_root[test]" >&2
  echo "$_want" > "$_stamp"
fi
export PATH="$HANET_VENV/bin:$PATH"
# Quieter TensorFlow logs; tf.data must not grab an accelerator JAX wants.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
set +euo pipefail
