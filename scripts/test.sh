#!/usr/bin/env bash
# The test command: sets up the environment, then runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k parity`).
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# Point data tests at the shared datasets when they sit beside the checkout.
if [ -z "${HANET_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export HANET_DATA_DIR="$(cd ../shared/data && pwd)"
fi
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
