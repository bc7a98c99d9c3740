"""Recorder local time versus true time: zones, clock offsets, ISO strings."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def dock_zone() -> ZoneInfo:
    """The dock's own time zone ($TZ, /etc/timezone, the /etc/localtime link), else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    tz_file = Path("/etc/timezone")
    if tz_file.is_file():
        candidates.append(tz_file.read_text().strip())
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        candidates.append(str(localtime.resolve()).split("zoneinfo/", 1)[-1])
    for name in candidates:
        try:
            return _zone(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def _zone(name: str) -> ZoneInfo:
    if not name:
        raise ValueError("empty zone name")
    return ZoneInfo(name)


def recorder_zone(name: str) -> ZoneInfo:
    """The zone recorder local times are read in: the configured one, else the dock's."""
    return ZoneInfo(name) if name else dock_zone()


def utcnow() -> datetime:
    """The dock's trusted clock, as an aware UTC datetime."""
    return datetime.now(UTC)


def local_now(tz: ZoneInfo) -> datetime:
    """The current true time as a naive datetime in `tz` (what a recorder clock should show)."""
    return utcnow().astimezone(tz).replace(tzinfo=None)


def to_true(recorder: datetime, tz: tzinfo, offset_s: float | None) -> datetime:
    """A time on the recorder's clock as true time (aware UTC): the one conversion.

    Naive is local time in `tz` (a file name, the event log); aware already names its instant
    (a container header, a file's mtime). Either way the measured clock offset is taken off.
    """
    aware = recorder if recorder.tzinfo is not None else recorder.replace(tzinfo=tz)
    return (aware - timedelta(seconds=offset_s or 0.0)).astimezone(UTC)


def recorder_to_true(tz: tzinfo, offset_s: float | None) -> Callable[[datetime], datetime]:
    """`to_true` for one recorder (its zone and measured offset), as a converter."""
    return lambda recorder: to_true(recorder, tz, offset_s)


def clock_offset_s(recorder_local: datetime, tz: ZoneInfo, now: datetime) -> float:
    """How far ahead (+) or behind (-) the recorder's clock runs against the trusted `now`."""
    return (recorder_local.replace(tzinfo=tz) - now).total_seconds()


def iso(dt: datetime, tz: ZoneInfo | None = None) -> str:
    """ISO 8601 with offset, in `tz` when given (so people read their local time)."""
    return (dt.astimezone(tz) if tz else dt).isoformat(timespec="seconds")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with offset into an aware datetime."""
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
