#!/usr/bin/env bash
# The test command: sets up the environment, checks the package's import layering
# (lint-imports, contracts in pyproject.toml), then runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Point data tests at the shared datasets when they sit beside the checkout.
if [ -z "${HANET_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export HANET_DATA_DIR="$(cd ../shared/data && pwd)"
fi
lint-imports || { echo "lint-imports: the package's layering is broken (pyproject.toml)" >&2; exit 1; }
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
