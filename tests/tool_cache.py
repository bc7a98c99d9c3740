"""Where scripts/test-tools.sh keeps the real clients (Home Assistant, Prometheus), by its rule."""

from __future__ import annotations

import os
from pathlib import Path

HA_VERSION = "2024.1.6"


def cache_dir() -> Path:
    """$DOCK_AGENT_TEST_CACHE, else /var/cache/dock-agent-tests when writable, else ~/.cache."""
    if os.environ.get("DOCK_AGENT_TEST_CACHE"):
        return Path(os.environ["DOCK_AGENT_TEST_CACHE"])
    system = Path("/var/cache/dock-agent-tests")
    if system.is_dir() and os.access(system, os.W_OK):
        return system
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dock-agent-tests"


def hass_binary() -> tuple[Path | None, str]:
    """(the hass executable, "") or (None, why it is missing)."""
    venv = cache_dir() / f"ha-{HA_VERSION}"
    if not (venv / ".complete").exists():
        return None, (
            f"Home Assistant {HA_VERSION} is not installed in {venv}: run scripts/setup.sh --dev "
            "(scripts/test-tools.sh; it needs Python 3.11 and PyPI)"
        )
    return venv / "bin" / "hass", ""


def prometheus_binary(name: str = "prometheus") -> tuple[Path | None, str]:
    """(Debian's prometheus or promtool, "") or (None, why it is missing)."""
    path = cache_dir() / "prometheus" / "usr" / "bin" / name
    if not path.exists():
        return None, (
            f"Debian's {name} is not unpacked in {path.parent}: run scripts/setup.sh --dev "
            "(scripts/test-tools.sh; it needs apt-get download prometheus)"
        )
    return path, ""
