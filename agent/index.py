"""The clip index: a small TinyDB active set plus append-only archive shards for finished clips."""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from agent import durable

logger = logging.getLogger(__name__)

TABLE = "active"
STALE_TEMP_S = 600.0
Record = dict[str, Any]


class IndexCorrupt(Exception):
    """The active index file cannot be read (it is never half-written, so this is damage)."""


def _dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept, NaN refused."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _plain(record: Record) -> Record:
    """A deep, JSON-clean copy: refuses what JSON cannot hold before any state changes."""
    copied: Record = json.loads(_dumps(record))
    return copied


class DurableStorage(Storage):
    """TinyDB storage kept in memory; every write replaces the file atomically (durable.py)."""

    def __init__(self, path: str) -> None:
        """Load the file once; later reads are served from memory."""
        self.path = Path(path)
        self._data: dict[str, dict[str, Any]] = {}
        self._committed = b"{}"
        self._signature: tuple[int, int, int] | None = None
        # Encoded JSON per document id, so a write re-encodes only what changed.
        self._fragments: dict[str, str] = {}
        self.reload()

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The in-memory document (TinyDB mutates it and then calls write)."""
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Persist `data` durably; on failure fall back to the last committed state."""
        try:
            encoded = self._encode(data)
            durable.write_bytes(self.path, encoded)
        except BaseException:
            # TinyDB has already changed the documents in place: undo that.
            self._data = json.loads(self._committed)
            self._fragments.clear()
            raise
        self._data, self._committed = data, encoded
        self._signature = self._stat()

    def invalidate(self, doc_id: int) -> None:
        """Forget the cached encoding of a document about to change in place."""
        self._fragments.pop(str(doc_id), None)

    def _encode(self, data: dict[str, dict[str, Any]]) -> bytes:
        """The whole document as JSON, reusing the encodings of unchanged documents."""
        if set(data) != {TABLE}:
            self._fragments.clear()
            return _dumps(data).encode("utf-8")
        table = data[TABLE]
        if len(self._fragments) > len(table):
            self._fragments = {k: v for k, v in self._fragments.items() if k in table}
        parts = []
        for key, doc in table.items():
            fragment = self._fragments.get(key)
            if fragment is None:
                fragment = self._fragments[key] = _dumps(doc)
            parts.append(f"{_dumps(key)}:{fragment}")
        return ("{" + _dumps(TABLE) + ":{" + ",".join(parts) + "}}").encode("utf-8")

    def changed_on_disk(self) -> bool:
        """Whether another process replaced the file since we last read or wrote it."""
        return self._stat() != self._signature

    def reload(self) -> None:
        """Read the file (absent means empty)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b"{}"
        try:
            self._data = json.loads(raw)
        except ValueError as exc:
            raise IndexCorrupt(f"{self.path}: not valid JSON ({exc})") from None
        self._committed = raw
        self._fragments.clear()
        self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


def shard_name(clip_id: str) -> str:
    """The archive shard file name of a clip: the first two hex digits of its id."""
    return f"{clip_id[:2].lower()}.jsonl"


def _complete_records(data: bytes) -> Iterator[Record]:
    """Records of a shard's complete lines; a torn last line (no newline) is ignored."""
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            logger.warning("archive shard: unreadable line skipped")
            continue
        if isinstance(record, dict) and "clip_id" in record:
            yield record


def _latest_in(data: bytes, clip_id: str) -> Record | None:
    """The last complete version of `clip_id` in a shard's bytes, scanning from the end."""
    key = f'"clip_id":{json.dumps(clip_id)}'.encode()
    stop = data.rfind(b"\n") + 1  # bytes after the last newline are a torn append
    while (hit := data.rfind(key, 0, stop)) >= 0:
        begin = data.rfind(b"\n", 0, hit) + 1
        end = data.find(b"\n", hit)
        try:
            record = json.loads(data[begin:end])
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("clip_id") == clip_id:
            return record
        stop = begin
    return None


def _append_shard(path: Path, lines: bytes) -> None:
    """Append whole lines to a shard with fsync, first cutting off any torn last line."""
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _cut_torn(fd, size, path)
        if os.write(fd, lines) != len(lines):
            raise OSError(f"{path}: short write (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        durable.fsync_dir(path.parent)


def _cut_torn(fd: int, size: int, path: Path) -> None:
    """Truncate a shard back to its last newline (the torn bytes were never acknowledged)."""
    data = os.pread(fd, size, 0)
    keep = data.rfind(b"\n") + 1
    os.ftruncate(fd, keep)
    logger.warning("archive shard %s: torn last line (%d bytes) cut off", path, size - keep)


def line_clip_id(line: bytes) -> str | None:
    """The clip id of one archive line, found without parsing the record (None: unreadable)."""
    key = b'"clip_id":"'
    at = line.find(key)
    close = line.find(b'"', at + len(key))
    if at >= 0 and close > 0 and line.count(key) == 1:
        return line[at + len(key) : close].decode("utf-8", "replace")
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return str(record["clip_id"]) if isinstance(record, dict) and "clip_id" in record else None


class ArchiveFollower:
    """Reads the archive shards incrementally, as (clip_id, JSON line) pairs, records unparsed."""

    def __init__(self, archive_dir: Path, block: int = 1 << 20) -> None:
        """Follow the shards in `archive_dir`; appended lines are read `block` bytes at a time."""
        self.archive_dir = archive_dir
        self.block = block
        self._offsets: dict[str, int] = {}  # shard name -> bytes consumed (whole lines only)

    def poll(self, stop: threading.Event | None = None) -> Iterator[tuple[str, bytes]]:
        """Per shard: first the latest version of each clip, later only lines appended since."""
        for shard in sorted(self.archive_dir.glob("*.jsonl")):
            if stop is not None and stop.is_set():
                return
            if shard.name in self._offsets:
                yield from self._tail(shard)
            else:
                yield from self._first(shard)

    def _first(self, shard: Path) -> Iterator[tuple[str, bytes]]:
        """One shard read whole (1/256 of the history), newest line first, each clip once."""
        data = shard.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn append
        seen: set[str] = set()
        for line in reversed(data[:end].splitlines()):
            clip_id = line_clip_id(line)
            if clip_id is not None and clip_id not in seen:
                seen.add(clip_id)
                yield clip_id, line
        self._offsets[shard.name] = end

    def _tail(self, shard: Path) -> Iterator[tuple[str, bytes]]:
        """The complete lines appended to a shard since the last look, in order."""
        offset = self._offsets[shard.name]
        size = shard.stat().st_size
        if size == offset:
            return
        if size < offset:
            offset = 0  # replaced by hand (the agent only appends): read it all again
        with open(shard, "rb") as fh:
            fh.seek(offset)
            rest = b""
            while chunk := fh.read(self.block):
                data = rest + chunk
                end = data.rfind(b"\n") + 1
                for line in data[:end].splitlines():
                    if (clip_id := line_clip_id(line)) is not None:
                        yield clip_id, line
                offset, rest = offset + end, data[end:]
                self._offsets[shard.name] = offset


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class ClipIndex:
    """Clip records: active ones in TinyDB, finished ones in append-only shards."""

    def __init__(self, data_dir: Path) -> None:
        """Open the index under data_dir/index; archive shards are not read here."""
        self.root = Path(data_dir) / "index"
        self.archive_dir = self.root / "archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            self._db = TinyDB(str(self.root / "active.json"), storage=DurableStorage)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._storage: DurableStorage = self._db.storage  # type: ignore[assignment]
        self._table: Table = self._db.table(TABLE, cache_size=0)
        self._ids: dict[str, int] = {}
        self._rebuild_ids()
        self._remove_stale_temps()

    # -- reading ---------------------------------------------------------------

    def get(self, clip_id: str) -> Record | None:
        """The record of a clip: the active one, else the latest archived version."""
        with self._lock:
            self._follow_disk()
            doc_id = self._ids.get(clip_id)
            if doc_id is not None:
                return copy.deepcopy(dict(self._table.get(doc_id=doc_id) or {}))
        return self._archived(clip_id)

    def active(self) -> list[Record]:
        """Every active (unfinished) record."""
        with self._lock:
            self._follow_disk()
            return [copy.deepcopy(dict(doc)) for doc in self._table.all()]

    def find(self, **match: Any) -> list[Record]:
        """Active records whose fields equal all of `match`."""
        with self._lock:
            self._follow_disk()
            docs = self._table.search(Query().fragment(match))
            return [copy.deepcopy(dict(doc)) for doc in docs]

    def iter_all(self) -> Iterator[Record]:
        """Every record, active and archived, each once in its latest version."""
        current = self.active()
        seen = {r["clip_id"] for r in current}
        yield from current
        for shard in sorted(self.archive_dir.glob("*.jsonl")):
            latest = {r["clip_id"]: r for r in _complete_records(shard.read_bytes())}
            yield from (r for cid, r in latest.items() if cid not in seen)

    def follow_archive(self) -> ArchiveFollower:
        """A reader of the archive that sees every later change (also another process's)."""
        return ArchiveFollower(self.archive_dir)

    def stats(self) -> dict[str, Any]:
        """Active count and bytes, and the sync backlog, for status reporting."""
        records = self.active()
        unsynced = [r for r in records if r.get("state") == "offloaded"]
        times = [t for t in (_parse_time(r.get("offloaded_at")) for r in unsynced) if t]
        return {
            "active_clips": len(records),
            "active_bytes": sum(int(r.get("size") or 0) for r in records),
            "unsynced_clips": len(unsynced),
            "unsynced_bytes": sum(int(r.get("size") or 0) for r in unsynced),
            "oldest_unsynced_offloaded_at": min(times).isoformat() if times else None,
        }

    # -- writing ---------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Insert or replace an active record, keyed by record["clip_id"]."""
        clean = _plain(record)
        clip_id = str(clean["clip_id"])
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                doc_id = max(self._ids.values(), default=0) + 1
                self._storage.invalidate(doc_id)
                self._table.insert(Document(clean, doc_id=doc_id))
                self._ids[clip_id] = doc_id
            else:
                self._storage.invalidate(doc_id)
                self._table.update(lambda doc: _replace(doc, clean), doc_ids=[doc_id])

    def update(self, clip_id: str, **changes: Any) -> Record:
        """Change fields of an active or archived clip and return the new record."""
        if "clip_id" in changes:
            raise ValueError("a clip's clip_id cannot change")
        clean = _plain(changes)
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is not None:
                self._storage.invalidate(doc_id)
                self._table.update(clean, doc_ids=[doc_id])
                return copy.deepcopy(dict(self._table.get(doc_id=doc_id) or {}))
            return self._update_archived(clip_id, clean)

    def archive(self, clip_id: str) -> None:
        """Move a finished clip from the active set to its shard (no-op if already there)."""
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                if self._archived(clip_id) is None:
                    raise KeyError(clip_id)
                return
            record = dict(self._table.get(doc_id=doc_id) or {})
            # Shard first: a crash in between leaves the clip in both places, never in neither.
            _append_shard(self._shard(clip_id), (_dumps(record) + "\n").encode("utf-8"))
            self._table.remove(doc_ids=[doc_id])
            del self._ids[clip_id]

    def import_archived(self, records: Iterable[Record]) -> int:
        """Append finished records straight to their shards in bulk (migration, benchmarks)."""
        by_shard: dict[str, list[str]] = {}
        for record in records:
            by_shard.setdefault(shard_name(record["clip_id"]), []).append(_dumps(record) + "\n")
        with self._mutating():
            for name, lines in by_shard.items():
                _append_shard(self.archive_dir / name, "".join(lines).encode("utf-8"))
        return sum(len(lines) for lines in by_shard.values())

    def close(self) -> None:
        """Release the files."""
        with self._lock:
            self._db.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # -- internals -------------------------------------------------------------

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Exclusive across threads (lock) and processes (flock, e.g. a CLI `hold`)."""
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._follow_disk()
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _follow_disk(self) -> None:
        """Pick up the active set another process wrote (called with the lock held)."""
        if self._storage.changed_on_disk():
            self._storage.reload()
            self._rebuild_ids()

    def _rebuild_ids(self) -> None:
        self._ids = {str(doc["clip_id"]): doc.doc_id for doc in self._table.all()}

    def _shard(self, clip_id: str) -> Path:
        return self.archive_dir / shard_name(clip_id)

    def _archived(self, clip_id: str) -> Record | None:
        try:
            data = self._shard(clip_id).read_bytes()
        except FileNotFoundError:
            return None
        return _latest_in(data, clip_id)

    def _update_archived(self, clip_id: str, changes: Record) -> Record:
        """Append a new version of an archived clip (called with the mutation lock held)."""
        record = self._archived(clip_id)
        if record is None:
            raise KeyError(clip_id)
        record.update(changes)
        _append_shard(self._shard(clip_id), (_dumps(record) + "\n").encode("utf-8"))
        return record

    def _remove_stale_temps(self) -> None:
        """Delete temp files of writes a crash interrupted (old enough not to be in flight)."""
        cutoff = time.time() - STALE_TEMP_S
        for tmp in self.root.glob(".active.json.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                continue


def _replace(doc: MutableMapping[str, Any], record: Record) -> None:
    """Replace a stored document's content in place (TinyDB's update merges instead)."""
    doc.clear()
    doc.update(record)
