"""Test doubles at the edges the code under test takes as parameters."""

from __future__ import annotations

import os
from typing import Any


class MemoryCustody:
    """A custody log kept in memory (what NotesStore and CommandServer append to)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"seq": len(self.entries) + 1, "event": event, **fields}
        self.entries.append(entry)
        return entry


def flip_byte(path: str | os.PathLike[str], offset: int) -> None:
    """Change the byte at `offset` (always: its bits inverted, so random data cannot hide it)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        (old,) = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([old ^ 0xFF]))
