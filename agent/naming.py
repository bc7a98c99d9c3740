"""Recorder media file names: {device_id}_{officer_id}_{YYYYMMDDhhmmss}_{seq}.{ext} (SPEC 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

NAME_RE = re.compile(
    r"(?P<device>[A-Za-z0-9-]{1,64})_(?P<officer>[A-Za-z0-9-]{0,64})_"
    r"(?P<start>\d{14})_(?P<seq>\d{1,9})\.(?P<ext>[A-Za-z0-9]{1,5})"
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
        start = datetime.strptime(m["start"], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return ParsedName(m["device"], m["officer"], start, int(m["seq"]))
