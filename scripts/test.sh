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
# Most tests wait on a broker, a daemon or a child process rather than compute (the whole
# suite is under 3.5 minutes of CPU), so four workers on two cores overlap the waiting; an idle
# worker steals queued tests (worksteal), so the long ones do not all end up last on one.
exec .venv/bin/pytest -q -p no:cacheprovider -n "${PYTEST_WORKERS:-4}" --dist worksteal tests/ "$@"
