"""The 24-hour rule (regulation 001 第十三条): export within the window after recording."""

from __future__ import annotations

from datetime import datetime, timedelta


def is_late(recorded_end: datetime, offloaded_at: datetime, window_hours: float) -> bool:
    """True when the recording ended more than `window_hours` before it was offloaded."""
    return offloaded_at - recorded_end > timedelta(hours=window_hours)


def hours_late(recorded_end: datetime, offloaded_at: datetime, window_hours: float) -> float:
    """How many hours past the window the offload came (0 when on time)."""
    excess = (offloaded_at - recorded_end) - timedelta(hours=window_hours)
    return max(excess.total_seconds() / 3600, 0.0)
