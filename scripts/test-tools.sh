#!/usr/bin/env bash
# The real clients the monitoring tests drive (SPEC 2, SPEC 12), cached outside the repository so
# that a fresh clone reuses them:
#   - Home Assistant 2024.1.6 (the last release on Python 3.11) in a virtual environment of its
#     own, with the requirements of the integrations the test loads (it runs with --skip-pip);
#   - Debian's prometheus and promtool binaries, unpacked from the package (`apt-get download`):
#     installing the package would start a system service on port 9090, and only the binaries
#     are needed (the test runs its own server on a free port).
# The cache: $DOCK_AGENT_TEST_CACHE, else /var/cache/dock-agent-tests when writable, else
# ~/.cache/dock-agent-tests (tests/test_tools.py finds it by the same rule). Idempotent.
set -euo pipefail

cache=${DOCK_AGENT_TEST_CACHE:-}
if [ -z "$cache" ]; then
  if mkdir -p /var/cache/dock-agent-tests 2>/dev/null && [ -w /var/cache/dock-agent-tests ]; then
    cache=/var/cache/dock-agent-tests
  else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/dock-agent-tests"
  fi
fi
mkdir -p "$cache"
# One installer at a time: two setups running at once (two checkouts on one machine) would
# otherwise remove each other's half-made environment.
exec 9>"$cache/.install.lock"
flock 9

HA_VERSION=2024.1.6
# The requirements of onboarding, config, api, websocket_api, mqtt and frontend (with their
# dependencies) in homeassistant 2024.1.6's manifests, and of stream (numpy...): the MQTT
# integration sets up every platform it serves, camera among them, which imports stream; the
# frontend's get_services imports calendar, which imports dateutil without declaring it.
HA_REQUIREMENTS=(
  "homeassistant==$HA_VERSION" paho-mqtt==1.6.1 Pillow==10.1.0 aiohttp_cors==0.7.0
  aiohttp-fast-url-dispatcher==0.3.0 aiohttp-zlib-ng==0.1.3 janus==1.0.0
  psutil-home-assistant==0.0.1 SQLAlchemy==2.0.23 fnv-hash-fast==0.5.0
  home-assistant-frontend==20240104.0 numpy==1.26.0 PyTurboJPEG==1.7.1 ha-av==10.1.1
  python-dateutil==2.8.2
)
ha="$cache/ha-$HA_VERSION"
if [ ! -e "$ha/.complete" ]; then
  py=""
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c \
        'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      py=$candidate; break
    fi
  done
  if [ -z "$py" ]; then
    echo "test-tools: no Python 3.11 for Home Assistant $HA_VERSION (its test will skip)" >&2
  else
    echo "test-tools: installing Home Assistant $HA_VERSION into $ha (once, a few minutes)"
    rm -rf "$ha"
    "$py" -m venv "$ha"
    if "$ha/bin/python" -m pip install -q --disable-pip-version-check "${HA_REQUIREMENTS[@]}" \
        2>&1 | grep -v "^WARNING: Location"; then :; fi
    if "$ha/bin/python" -c 'import homeassistant, paho.mqtt, PIL, sqlalchemy, numpy, av' 2>/dev/null; then
      touch "$ha/.complete"
    else
      echo "test-tools: the Home Assistant install failed (its test will skip)" >&2
    fi
  fi
fi

prom="$cache/prometheus"
if [ ! -x "$prom/usr/bin/prometheus" ]; then
  echo "test-tools: unpacking Debian's prometheus into $prom"
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
      || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get update -qq \
           && (cd "$tmp" && apt-get download prometheus >/dev/null); }; then
    dpkg-deb -x "$tmp"/prometheus_*.deb "$prom"
  else
    echo "test-tools: apt-get download prometheus failed (the Prometheus test will skip)" >&2
  fi
  rm -rf "$tmp"
fi
echo "test-tools: cache $cache"
