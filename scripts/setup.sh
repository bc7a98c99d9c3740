#!/usr/bin/env bash
# Set up dock-agent on a Debian machine: system packages (apt, only when missing) and a
# Python virtual environment in .venv with the package installed. Idempotent.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus the test and lint tools (and fuse3 for tests/powercut)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have_cmd mosquitto   || need+=(mosquitto)
have_cmd ffmpeg      || need+=(ffmpeg)
have_cmd pkg-config  || need+=(pkg-config)
have_cmd gcc         || need+=(gcc)
have_cmd mkfs.ext4   || need+=(e2fsprogs)
have_cmd losetup     || need+=(mount)
have_cmd setpriv     || need+=(util-linux)
pkg-config --exists libsystemd 2>/dev/null || need+=(libsystemd-dev)
if [ "${1:-}" = "--dev" ]; then
  # The status page test drives a real headless Chromium; without a CJK font every Chinese
  # character renders as an empty box (docs/INSTALL.md installs the same font on the dock).
  have_cmd chromium || need+=(chromium)
  have_cmd fc-list  || need+=(fontconfig)
  { have_cmd fc-list && fc-list :lang=zh | grep -q .; } || need+=(fonts-wqy-microhei)
fi
if [ "${1:-}" = "--dev" ]; then
  # tests/powercut: a FUSE layer (mfusepy over libfuse3; fusermount3 comes with fuse3)
  have_cmd fusermount3 || need+=(fuse3)
  # The unit-sandbox test traces a docking (strace) and expands SystemCallFilter= groups.
  have_cmd strace          || need+=(strace)
  have_cmd systemd-analyze || need+=(systemd)
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  need+=(python3 python3-venv python3-dev); PY=/usr/bin/python3
fi
if [ "$("$PY" -c 'import sys; print(sys.prefix)')" = /usr ]; then
  # Debian's own python needs its venv and headers packages (systemd-python compiles).
  dpkg -s python3-venv >/dev/null 2>&1 || need+=(python3-venv)
  dpkg -s python3-dev  >/dev/null 2>&1 || need+=(python3-dev)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
extra=""; [ "${1:-}" = "--dev" ] && extra="[dev]"
if [ -n "$extra" ] && [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
  modprobe fuse 2>/dev/null || echo "setup: no /dev/fuse (the power-cut tests will skip)" >&2
fi
# (This machine's pip configuration may name a package index folder that does not exist: pip
# says so on every call, a line about the machine, not about dock-agent.)
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 >/dev/null \
  | grep -v "^WARNING: Location" >&2 || true
# setuptools warns about editable installs in general (a BuildBackendWarning): not ours to act on.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import agent, paho.mqtt, tinydb, pyudev, requests' \
  || { echo "setup: the Python packages did not install" >&2; exit 1; }
if [ -n "$extra" ]; then
  # Home Assistant and Prometheus for the monitoring tests, cached outside the repository
  scripts/test-tools.sh
fi
echo "setup: ready (.venv/bin/dock-agent)"
