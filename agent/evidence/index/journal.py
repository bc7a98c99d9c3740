"""The active set's storage: TinyDB in memory, made durable by an append-only journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from tinydb.storages import Storage

from agent.durable import TORN_CUT, AppendLog

Record = dict[str, Any]


class IndexCorrupt(Exception):
    """The active index file cannot be read (it is never half-written, so this is damage)."""


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept, NaN refused."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def plain(record: Record) -> Record:
    """A deep, JSON-clean copy: refuses what JSON cannot hold before any state changes."""
    copied: Record = json.loads(dumps(record))
    return copied


class Table(Protocol):
    """Where journaled operations land: active records by clip id."""

    def put(self, clip_id: str, record: Record) -> None:
        """Insert or replace the record of `clip_id`."""
        ...

    def update(self, clip_id: str, fields: Record) -> None:
        """Change fields of `clip_id`'s record (no-op when it is not there)."""
        ...

    def remove(self, clip_id: str) -> None:
        """Drop `clip_id`'s record (no-op when it is not there)."""
        ...


def apply(table: Table, op: Record) -> None:
    """The meaning of one journaled operation, the only one (idempotent when replayed: every
    operation sets a state rather than changing one). Raises IndexCorrupt for anything else."""
    kind = op.get("op") if isinstance(op, dict) else None
    try:
        if kind == "batch":
            for inner in op["ops"]:
                apply(table, inner)
        elif kind == "put":
            table.put(str(op["r"]["clip_id"]), op["r"])
        elif kind == "update":
            table.update(str(op["id"]), op["set"])
        elif kind == "remove":
            table.remove(str(op["id"]))
        else:
            raise IndexCorrupt(f"unknown operation {kind!r}")
    except (KeyError, TypeError):
        raise IndexCorrupt(f"a {kind!r} operation without its fields") from None


class Records(dict[str, Record]):
    """A Table in a plain dict (the read-only snapshot's)."""

    def put(self, clip_id: str, record: Record) -> None:
        """Insert or replace."""
        self[clip_id] = record

    def update(self, clip_id: str, fields: Record) -> None:  # type: ignore[override]
        """Change fields of a record that is there."""
        if clip_id in self:
            self[clip_id].update(fields)

    def remove(self, clip_id: str) -> None:
        """Drop a record if there."""
        self.pop(clip_id, None)


class MemoryStorage(Storage):
    """TinyDB storage held in memory; ClipIndex makes it durable (journal plus snapshots)."""

    def __init__(self) -> None:
        """Start empty; ClipIndex loads the snapshot into it."""
        self.data: dict[str, dict[str, Any]] = {}

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The in-memory document."""
        return self.data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Keep `data` (ClipIndex never writes through TinyDB: it journals first)."""
        self.data = data


class Journal:
    """The active set's journal: one JSON transaction per line on an AppendLog, read incrementally."""

    def __init__(self, path: Path) -> None:
        """Open (creating, with the directory entry made durable) the journal file."""
        self.path = path
        self.log = AppendLog(path, torn=TORN_CUT)
        self.fd = self.log.fd
        self.offset = 0  # bytes consumed: whole lines only

    def size(self) -> int:
        """The file's current size (another process may have appended)."""
        return self.log.size()

    def read_new(self) -> list[Record]:
        """The complete lines appended since the last read; a torn last line is left unread."""
        data = self.log.read(self.offset, max(self.size() - self.offset, 0))
        end = data.rfind(b"\n") + 1
        ops = []
        for number, raw in enumerate(data[:end].splitlines()):
            try:
                ops.append(json.loads(raw))
            except ValueError:
                raise IndexCorrupt(
                    f"{self.path}: line {number + 1} after byte {self.offset} is not JSON"
                ) from None
        self.offset += end
        return ops

    def append(self, line: bytes) -> None:
        """Append one whole line durably (a torn tail of a crashed writer is cut first)."""
        self.offset = self.log.append(line)

    def truncate(self) -> None:
        """Empty the journal (its content is in a durable snapshot now)."""
        self.log.truncate(0)
        self.offset = 0

    def close(self) -> None:
        """Close the file."""
        self.log.close()
