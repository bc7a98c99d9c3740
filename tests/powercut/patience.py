"""Timeouts that stretch with the machine's load: a busy CI runner is slow, not broken."""

from __future__ import annotations

import os


def patience(seconds: float) -> float:
    """`seconds` on an idle machine, times the runnable tasks per core (1 to 8), at least."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    scale = float(os.environ.get("POWERCUT_PATIENCE", "1"))  # a manual stretch on top
    return seconds * scale * min(max(1.0, load), 8.0)
