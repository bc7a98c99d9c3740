"""When a clip started and ended, in true time: the one place that answers it.

The start is decided once, before the clip is stored (its date folder comes from it):
from the file name (SPEC 5), else the container's movie header, else the file's mtime
(the moment the recorder last wrote it: the end of the recording, so the container's
duration is taken off where the header gives one). All are the recorder's clock, so the
measured clock offset is taken off too. Analysis later only adds the end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from agent.evidence.naming import parse_name
from agent.media.container import MovieHeader, movie_header
from agent.timebase import iso, parse_iso, to_true
from firmware_interface.base import ClipEntry

MIN_PLAUSIBLE_YEAR = 2000  # recorders with a flat clock battery write 1904 or 1970


@dataclass(frozen=True)
class StartTime:
    """When a clip started, in true time, and where that came from."""

    start: datetime
    source: str  # "name", "container" or "mtime"


def start_time(
    clip: ClipEntry,
    tz: ZoneInfo,
    clock_offset_s: float | None,
    open_source: Callable[[], BinaryIO],
) -> StartTime:
    """The clip's start in true time; `open_source` opens its bytes, only when the name fails."""
    parsed = parse_name(clip.name)
    if parsed:
        return StartTime(to_true(parsed.start_local, tz, clock_offset_s), "name")
    header = _header(open_source) if clip.media_type == "video" else None
    created = header.created if header else None
    if created and created.year >= MIN_PLAUSIBLE_YEAR:
        return StartTime(to_true(created, tz, clock_offset_s), "container")
    written = to_true(datetime.fromtimestamp(clip.mtime, UTC), tz, clock_offset_s)
    length = header.duration_s if header else None
    return StartTime(written - timedelta(seconds=length or 0.0), "mtime")


def _header(open_source: Callable[[], BinaryIO]) -> MovieHeader | None:
    """The movie header of the clip's bytes; None when unreadable or absent."""
    with suppress(OSError, ValueError), open_source() as fh:
        return movie_header(fh)
    return None


def span(record: dict[str, Any], duration_s: float | None) -> dict[str, Any]:
    """`recorded_end` once the duration is known (the start stays as decided at offload)."""
    if not duration_s:
        return {}
    start = parse_iso(record["recorded_start"])
    end = start + timedelta(seconds=duration_s)
    return {"recorded_end": iso(end.astimezone(start.tzinfo or UTC))}
