"""The clip index read as it is on disk, for commands that only read: nothing created or written.

`ClipIndex` opens its lock file and journal with O_CREAT and makes its directories, which a
query must not do (run as root before the daemon's first start, they would be root's and the
daemon's user could not open them). This reads the same files, read-only: the snapshot, the
journal replayed over it (under a shared flock of the lock file, when there is one, so a
compaction cannot fall between the two reads), and the archive shards. A missing data_dir
or index is an empty index.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from agent.durable import flocked
from agent.evidence.index.archive import complete_records
from agent.evidence.index.clip_index import JOURNAL, SNAPSHOT, TABLE
from agent.evidence.index.journal import IndexCorrupt, Records, apply
from agent.evidence.index.records import Record, active_stats


class IndexSnapshot:
    """Active records and the archive of one moment, read without writing anything."""

    def __init__(self, active: dict[str, Record], archive_dir: Path) -> None:
        self._active = active
        self.archive_dir = archive_dir

    @classmethod
    def read(cls, data_dir: Path) -> IndexSnapshot:
        """The index under `data_dir`/index now (empty when there is none)."""
        root = Path(data_dir) / "index"
        lock_fd = _open_if_exists(root / "lock")
        try:
            with flocked(lock_fd, fcntl.LOCK_SH) if lock_fd is not None else nullcontext():
                active = _active_records(root)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        return cls(active, root / "archive")

    def active(self) -> list[Record]:
        """Every active (unfinished) record."""
        return [dict(r) for r in self._active.values()]

    def stats(self) -> dict[str, Any]:
        """The same figures as ClipIndex.stats."""
        return active_stats(self.active())

    def iter_all(self) -> Iterator[Record]:
        """Every record, active and archived, each once in its latest version."""
        yield from self.active()
        if not self.archive_dir.is_dir():
            return
        for shard in sorted(self.archive_dir.glob("*.jsonl")):
            latest = {r["clip_id"]: r for r in complete_records(shard.read_bytes())}
            yield from (r for cid, r in latest.items() if cid not in self._active)


def _open_if_exists(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _active_records(root: Path) -> dict[str, Record]:
    """clip_id -> record: the snapshot with the journal's complete lines replayed over it."""
    try:
        raw = (root / SNAPSHOT).read_bytes()
    except FileNotFoundError:
        raw = b"{}"
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise IndexCorrupt(f"{root / SNAPSHOT}: not valid JSON ({exc})") from None
    table = doc.get(TABLE, {}) if isinstance(doc, dict) else {}
    records = Records({str(r["clip_id"]): r for r in table.values()})
    try:
        data = (root / JOURNAL).read_bytes()
    except FileNotFoundError:
        return records
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        try:
            apply(records, json.loads(line))
        except (ValueError, IndexCorrupt):
            raise IndexCorrupt(f"{root / JOURNAL}: line {number} is not an operation") from None
    return records
