"""Recording start from container metadata: the MP4/MOV `mvhd` creation time."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

MP4_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)
MAX_BOXES = 4096


def _boxes(fh: BinaryIO, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload offset, payload end) of the boxes between start and end."""
    found: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(found) < MAX_BOXES:
        fh.seek(pos)
        header = fh.read(16)
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header[:8])
        body = pos + 8
        if size == 1 and len(header) >= 16:
            size = struct.unpack(">Q", header[8:16])[0]
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < 8:
            break
        found.append((kind, body, min(pos + size, end)))
        pos += size
    return found


def mp4_creation_time(path: Path) -> datetime | None:
    """The movie header's creation time (UTC per the MP4 spec), None when absent or zero."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            for kind, body, end in _boxes(fh, 0, size):
                if kind == b"moov":
                    return _mvhd_time(fh, body, end)
    except OSError:
        return None
    return None


def _mvhd_time(fh: BinaryIO, start: int, end: int) -> datetime | None:
    for kind, body, _ in _boxes(fh, start, end):
        if kind != b"mvhd":
            continue
        fh.seek(body)
        head = fh.read(12)
        if len(head) < 12:
            return None
        version = head[0]
        seconds = (
            struct.unpack(">Q", head[4:12])[0]
            if version == 1
            else struct.unpack(">I", head[4:8])[0]
        )
        if seconds == 0:
            return None
        return MP4_EPOCH + timedelta(seconds=seconds)
    return None
