#!/usr/bin/env bash
# Set up (when needed) and run the end-to-end demo: broker, central receiver, dock, two recorders.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/dock-agent demo
