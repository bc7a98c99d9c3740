"""Recorder media file names: {device_id}_{officer_id}_{YYYYMMDDhhmmss}_{seq}.{ext} (SPEC 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

NAME_RE = re.compile(
    r"(?P<device>[A-Za-z0-9-]{1,64})_(?P<officer>[A-Za-z0-9-]{0,64})_"
    r"(?P<start>[0-9]{14})_(?P<seq>[0-9]{1,9})\.(?P<ext>[A-Za-z0-9]{1,5})"
)


@dataclass(frozen=True)
class ParsedName:
    """What a conforming file name says: device, officer, local start time, sequence."""

    device_id: str
    officer_id: str
    start_local: datetime
    seq: int


def parse_name(name: str) -> ParsedName | None:
    """Parse a media file name; None when it does not follow the scheme or the time is invalid."""
    m = NAME_RE.fullmatch(name)
    if not m:
        return None
    try:
        t = m["start"]  # ASCII digits only; datetime() refuses month 13, 31 Feb, hour 24
        start = datetime(
            int(t[:4]), int(t[4:6]), int(t[6:8]), int(t[8:10]), int(t[10:12]), int(t[12:])
        )
    except ValueError:
        return None
    return ParsedName(m["device"], m["officer"], start, int(m["seq"]))
