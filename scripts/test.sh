#!/usr/bin/env bash
# Set up (when needed) and run every check: ruff, mypy, and the whole pytest suite.
# Tests start their own Mosquitto on free loopback ports; root-only tests (loop devices,
# tmpfs) skip with a reason elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
echo "== ruff"
.venv/bin/ruff check agent firmware_interface tests
.venv/bin/ruff format --check agent firmware_interface tests
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider tests/ "$@"
