"""Container structure read with the stdlib: one ISO-BMFF box walker, and what it tells.

Used for a cut-file check (do the boxes declare more bytes than the file has?) and for the
movie header (`mvhd`): creation time and duration. Never trusts a box: a hostile file
cannot make it loop, seek outside the file, or read more than a header at a time.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, NamedTuple

ISO_EXTS = frozenset({".mp4", ".mov", ".m4a", ".3gp"})
RIFF_EXTS = frozenset({".avi", ".wav"})
MAX_BOXES = 100_000  # a hostile file cannot keep us walking forever
MP4_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)


class BadBox(Exception):
    """A box header that is nonsense, or more boxes than any real file has."""


class Box(NamedTuple):
    """One box: its type, where its body starts, and where it declares it ends."""

    kind: bytes
    body: int
    end: int  # may lie past the walked range: a cut file


def iter_boxes(fh: BinaryIO, start: int, end: int) -> Iterator[Box]:
    """The boxes between `start` and `end`; a header cut short declares itself past `end`."""
    pos = start
    for _ in range(MAX_BOXES):
        if pos >= end:
            return
        fh.seek(pos)
        header = fh.read(16)
        if len(header) < 8:
            yield Box(b"", pos, end + 1)
            return
        size = _box_size(header, end - pos)
        if size is None:
            raise BadBox(f"nonsense box header at byte {pos}")
        body = pos + (16 if struct.unpack(">I", header[:4])[0] == 1 else 8)
        yield Box(header[4:8], body, pos + size)
        pos += size
    raise BadBox(f"more than {MAX_BOXES} boxes")


def _box_size(header: bytes, remaining: int) -> int | None:
    """The size of the box starting with `header`, or None when the header is nonsense."""
    (size32,) = struct.unpack(">I", header[:4])
    if not header[4:8].isascii():
        return None
    if size32 == 0:  # "to end of file"
        return remaining
    if size32 == 1:
        if len(header) < 16:
            return remaining + 1
        (size64,) = struct.unpack(">Q", header[8:16])
        return size64 if size64 >= 16 else None
    return size32 if size32 >= 8 else None


# ---- is the file cut? -------------------------------------------------------------------------


def declared_beyond_eof(path: str | os.PathLike[str]) -> bool | None:
    """True when the container declares more bytes than the file has; None when unknown."""
    ext = os.path.splitext(path)[1].lower()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if ext in ISO_EXTS:
            return _iso_beyond(fh, size)
        if ext in RIFF_EXTS:
            return _riff_beyond(fh, size)
    return None


def _iso_beyond(fh: BinaryIO, size: int) -> bool | None:
    """A top-level box running past the end means a cut file."""
    try:
        return any(box.end > size for box in iter_boxes(fh, 0, size))
    except BadBox:
        return None


def _riff_beyond(fh: BinaryIO, size: int) -> bool | None:
    """A RIFF file declares its length in its first eight bytes."""
    header = fh.read(8)
    if len(header) < 8 or header[:4] not in (b"RIFF", b"RF64"):
        return None
    (declared,) = struct.unpack("<I", header[4:8])
    if header[:4] == b"RF64" or declared == 0xFFFFFFFF:
        return None
    return declared + 8 > size


# ---- the movie header --------------------------------------------------------------------------


@dataclass(frozen=True)
class MovieHeader:
    """What `mvhd` says: creation time (UTC per the MP4 spec) and duration, each when given."""

    created: datetime | None
    duration_s: float | None


def movie_header(fh: BinaryIO) -> MovieHeader | None:
    """The `moov/mvhd` of an MP4/MOV file, None when it has none (or is not one)."""
    size = fh.seek(0, 2)
    try:
        for box in iter_boxes(fh, 0, size):
            if box.kind == b"moov":
                for inner in iter_boxes(fh, box.body, min(box.end, size)):
                    if inner.kind == b"mvhd":
                        return _mvhd(fh, inner.body)
                return None
    except BadBox:
        return None
    return None


def _mvhd(fh: BinaryIO, body: int) -> MovieHeader | None:
    fh.seek(body)
    head = fh.read(32)
    if len(head) < 20:
        return None
    if head[0] == 1:
        if len(head) < 32:
            return None
        created, _, scale, duration = struct.unpack(">QQIQ", head[4:32])
    else:
        created, _, scale, duration = struct.unpack(">IIII", head[4:20])
    when = MP4_EPOCH + timedelta(seconds=created) if created else None
    length = duration / scale if scale and duration and duration != 0xFFFFFFFF else None
    return MovieHeader(when, length)
