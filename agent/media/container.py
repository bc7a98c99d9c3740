"""Cheap container checks with the stdlib: does a file hold all the bytes its boxes declare?"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

ISO_EXTS = frozenset({".mp4", ".mov", ".m4a", ".3gp"})
RIFF_EXTS = frozenset({".avi", ".wav"})
MAX_BOXES = 100_000  # a hostile file cannot keep us walking forever


def declared_beyond_eof(path: Path) -> bool | None:
    """True when the container declares more bytes than the file has; None when unknown."""
    ext = path.suffix.lower()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if ext in ISO_EXTS:
            return _iso_beyond(fh, size)
        if ext in RIFF_EXTS:
            return _riff_beyond(fh, size)
    return None


def _iso_beyond(fh: BinaryIO, size: int) -> bool | None:
    """Walk the top-level ISO-BMFF boxes; a box running past the end means a cut file."""
    offset = 0
    for _ in range(MAX_BOXES):
        if offset >= size:
            return False
        fh.seek(offset)
        header = fh.read(16)
        if len(header) < 8:
            return True
        box_size = _iso_box_size(header, size - offset)
        if box_size is None:
            return None
        if offset + box_size > size:
            return True
        offset += box_size
    return None


def _iso_box_size(header: bytes, remaining: int) -> int | None:
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


def _riff_beyond(fh: BinaryIO, size: int) -> bool | None:
    """A RIFF file declares its length in its first eight bytes."""
    header = fh.read(8)
    if len(header) < 8 or header[:4] not in (b"RIFF", b"RF64"):
        return None
    (declared,) = struct.unpack("<I", header[4:8])
    if header[:4] == b"RF64" or declared == 0xFFFFFFFF:
        return None
    return declared + 8 > size
