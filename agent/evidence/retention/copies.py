"""Archived clips whose local copy is still here, followed from the archive shards."""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.evidence import lifecycle
from agent.evidence.lifecycle import SYNCED_LINE, acked

if TYPE_CHECKING:
    from agent.evidence.index import ArchiveFollower, ClipIndex

logger = logging.getLogger(__name__)

Record = dict[str, Any]


class LocalCopy(NamedTuple):
    """What retention needs of an archived clip whose local copy is still here (kept small)."""

    synced_at: str | None
    offloaded_at: str | None
    size: int
    flags: tuple[str, ...]
    media_type: str | None
    retention_class: str | None
    held: bool

    @classmethod
    def of(cls, record: Record) -> LocalCopy:
        """The retention fields of a record."""
        return cls(
            record.get("synced_at"),
            record.get("offloaded_at"),
            int(record.get("size") or 0),
            tuple(sys.intern(str(f)) for f in record.get("flags") or ()),
            _interned(record.get("media_type")),
            _interned(record.get("retention_class")),
            bool(record.get("held")),
        )

    def record(self, clip_id: str) -> Record:
        """A minimal synced record for select_purges."""
        fields = {**self._asdict(), "flags": list(self.flags)}
        return {"clip_id": clip_id, **lifecycle.synced(self.synced_at), **fields}


def _interned(value: Any) -> str | None:
    """One shared string per distinct value (classes, media types repeat across copies)."""
    return sys.intern(str(value)) if value is not None else None


def _parsed(line: bytes) -> Record | None:
    """An archive line's record; None (logged) when unreadable, so it is never purged."""
    try:
        record = json.loads(line)
    except ValueError:
        logger.warning("archive: unreadable line skipped by retention")
        return None
    return record if isinstance(record, dict) else None


class LocalCopies:
    """Archived clips whose local copy is still here, followed from the shards (any writer)."""

    def __init__(self, index: ClipIndex, follower: ArchiveFollower | None = None) -> None:
        """Empty until load(); the shards are read by `follower` (default: the index's)."""
        self._follower = follower or index.follow_archive()
        self._copies: dict[str, LocalCopy] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def load(self, stop: threading.Event | None = None) -> None:
        """The start-up scan, shard by shard; resumes if stopped, no-op once done."""
        with self._lock:
            if self.ready.is_set():
                return
            for clip_id, line in self._follower.poll(stop):
                self._apply(clip_id, line)
            if stop is None or not stop.is_set():
                self.ready.set()

    def catch_up(self) -> None:
        """Apply what was archived, purged, held or released since the last look."""
        with self._lock:
            for clip_id, line in self._follower.poll():
                self._apply(clip_id, line)

    def forget(self, clip_id: str) -> None:
        """The local copy of `clip_id` is gone."""
        with self._lock:
            self._copies.pop(clip_id, None)

    def records(self) -> list[Record]:
        """Minimal records of every local copy, for selection."""
        with self._lock:
            return [copy.record(clip_id) for clip_id, copy in self._copies.items()]

    def __len__(self) -> int:
        """How many archived local copies are known."""
        return len(self._copies)

    def _apply(self, clip_id: str, line: bytes) -> None:
        """A later version wins: synced keeps (or refreshes) the entry, anything else drops it."""
        record = _parsed(line) if SYNCED_LINE in line else None  # most: purged, not parsed
        if record is not None and acked(record):
            self._copies[sys.intern(clip_id)] = LocalCopy.of(record)
        else:
            self._copies.pop(clip_id, None)
