"""The clip index: a journaled TinyDB active set plus append-only archive shards for finished clips."""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from agent import durable
from agent.durable import flocked

logger = logging.getLogger(__name__)

TABLE = "active"
SNAPSHOT = "active.json"
JOURNAL = "active.journal"
# Compact when the journal passes this: replay at start-up stays well under 0.1 s.
COMPACT_BYTES = 4 * 1024 * 1024
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
    """The active set's append-only journal: one JSON transaction per line, fsynced per append."""

    def __init__(self, path: Path) -> None:
        """Open (creating, with the directory entry made durable) the journal file."""
        self.path = path
        created = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if created:
            durable.fsync_dir(path.parent)
        self.offset = 0  # bytes consumed: whole lines only

    def size(self) -> int:
        """The file's current size (another process may have appended)."""
        return os.fstat(self.fd).st_size

    def read_new(self) -> list[Record]:
        """The complete lines appended since the last read; a torn last line is left unread."""
        data = os.pread(self.fd, max(self.size() - self.offset, 0), self.offset)
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
        """Append one whole line and fsync it; a torn tail of a crashed writer is cut first."""
        if self.size() != self.offset:
            os.ftruncate(self.fd, self.offset)  # after read_new: only never-acknowledged bytes
            logger.warning("index journal %s: torn last line cut off", self.path)
        try:
            if os.write(self.fd, line) != len(line):
                raise OSError(f"{self.path}: short write (disk full?)")
            os.fsync(self.fd)
        except BaseException:
            os.ftruncate(self.fd, self.offset)  # not acknowledged: must not be replayed later
            raise
        self.offset += len(line)

    def truncate(self) -> None:
        """Empty the journal (its content is in a durable snapshot now)."""
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.offset = 0

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


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


def active_stats(records: list[Record]) -> dict[str, Any]:
    """Active count and bytes, and the sync backlog, of active records."""
    unsynced = [r for r in records if r.get("state") == "offloaded"]
    times = [t for t in (_parse_time(r.get("offloaded_at")) for r in unsynced) if t]
    return {
        "active_clips": len(records),
        "active_bytes": sum(int(r.get("size") or 0) for r in records),
        "unsynced_clips": len(unsynced),
        "unsynced_bytes": sum(int(r.get("size") or 0) for r in unsynced),
        "oldest_unsynced_offloaded_at": min(times).isoformat() if times else None,
    }


class ClipIndex:
    """Clip records: active ones in TinyDB (journaled), finished ones in append-only shards."""

    def __init__(self, data_dir: Path) -> None:
        """Open the index under data_dir/index; archive shards are not read here."""
        self.root = Path(data_dir) / "index"
        self.archive_dir = self.root / "archive"
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self._snapshot = self.root / SNAPSHOT
        self._lock = threading.Lock()
        self._lock_fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._journal: Journal | None = None
        try:
            self._journal = Journal(self.root / JOURNAL)
            self._db = TinyDB(storage=MemoryStorage)
            self._storage: MemoryStorage = self._db.storage  # type: ignore[assignment]
            self._table: Table = self._db.table(TABLE, cache_size=0)
            self._signature: tuple[int, int, int] | None = None
            self._ids: dict[str, int] = {}
            self._next_id = 1
            with flocked(self._lock_fd, fcntl.LOCK_SH):
                self._load()
        except BaseException:
            self._close_files()
            raise
        self._remove_stale_temps()

    # -- reading ---------------------------------------------------------------

    def get(self, clip_id: str) -> Record | None:
        """The record of a clip: the active one, else the latest archived version."""
        with self._lock:
            self._follow_disk()
            doc_id = self._ids.get(clip_id)
            if doc_id is not None:
                return copy.deepcopy(self._raw()[str(doc_id)])
        return self._archived(clip_id)

    def active(self) -> list[Record]:
        """Every active (unfinished) record."""
        with self._lock:
            self._follow_disk()
            return [copy.deepcopy(doc) for doc in self._raw().values()]

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
        return active_stats(self.active())

    # -- writing ---------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Insert or replace an active record, keyed by record["clip_id"]."""
        self.put_many([record])

    def put_many(self, records: list[Record]) -> None:
        """Insert or replace several records as one durable transaction (all or none)."""
        ops = [{"op": "put", "r": _plain(record)} for record in records]
        if not ops:
            return
        with self._mutating():
            self._commit(ops[0] if len(ops) == 1 else {"op": "batch", "ops": ops})

    def update(self, clip_id: str, **changes: Any) -> Record:
        """Change fields of an active or archived clip and return the new record."""
        if "clip_id" in changes:
            raise ValueError("a clip's clip_id cannot change")
        clean = _plain(changes)
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                return self._update_archived(clip_id, clean)
            self._commit({"op": "update", "id": clip_id, "set": clean})
            return copy.deepcopy(self._raw()[str(doc_id)])

    def archive(self, clip_id: str) -> None:
        """Move a finished clip from the active set to its shard (no-op if already there)."""
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                if self._archived(clip_id) is None:
                    raise KeyError(clip_id)
                return
            record = self._raw()[str(doc_id)]
            # Shard first: a crash in between leaves the clip in both places, never in neither.
            _append_shard(self._shard(clip_id), (_dumps(record) + "\n").encode("utf-8"))
            self._commit({"op": "remove", "id": clip_id})

    def import_archived(self, records: Iterable[Record]) -> int:
        """Append finished records straight to their shards in bulk (migration, benchmarks)."""
        by_shard: dict[str, list[str]] = {}
        for record in records:
            by_shard.setdefault(shard_name(record["clip_id"]), []).append(_dumps(record) + "\n")
        with self._mutating():
            for name, lines in by_shard.items():
                _append_shard(self.archive_dir / name, "".join(lines).encode("utf-8"))
        return sum(len(lines) for lines in by_shard.values())

    def compact(self) -> None:
        """Write the active set as a new snapshot and empty the journal."""
        with self._mutating():
            self._compact()

    def close(self) -> None:
        """Compact (a clean shutdown starts fast) and release the files."""
        with self._lock:
            if self._lock_fd < 0:
                return
            try:
                with flocked(self._lock_fd, fcntl.LOCK_EX):
                    self._follow_disk(held=True)
                    if self._journal is not None and self._journal.size():
                        self._compact()
            finally:
                self._close_files()

    # -- internals -------------------------------------------------------------

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Exclusive across threads (lock) and processes (flock, e.g. a CLI `hold`)."""
        with self._lock, flocked(self._lock_fd, fcntl.LOCK_EX):
            self._follow_disk(held=True)
            yield

    def _commit(self, op: Record) -> None:
        """Journal `op` durably, then apply it in memory (called with the flock held)."""
        journal = self._live_journal()
        journal.append((_dumps(op) + "\n").encode("utf-8"))
        self._apply(op)
        if journal.offset > COMPACT_BYTES:
            self._compact()

    def _compact(self) -> None:
        """Snapshot atomically, then empty the journal (called with the flock held).

        A crash between the two leaves a journal already in the snapshot: replaying it
        again is harmless, as every operation sets a state rather than changing one.
        """
        durable.write_bytes(self._snapshot, _dumps(self._storage.data).encode("utf-8"))
        self._live_journal().truncate()
        self._signature = self._snapshot_signature()

    def _follow_disk(self, held: bool = False) -> None:
        """Pick up what other processes wrote: a new snapshot, or journal lines (lock held)."""
        journal = self._live_journal()
        if self._signature == self._snapshot_signature() and journal.size() == journal.offset:
            return
        # A shared flock keeps a writer's compaction from running between our two reads.
        with nullcontext() if held else flocked(self._lock_fd, fcntl.LOCK_SH):
            if self._signature != self._snapshot_signature() or journal.size() < journal.offset:
                self._load()
            else:
                for op in journal.read_new():
                    self._apply(op)

    def _load(self) -> None:
        """Read the snapshot (absent means empty), then replay the whole journal over it."""
        try:
            raw = self._snapshot.read_bytes()
        except FileNotFoundError:
            raw = b"{}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise IndexCorrupt(f"{self._snapshot}: not valid JSON ({exc})") from None
        self._storage.data = data if isinstance(data, dict) else {}
        self._signature = self._snapshot_signature()
        self._rebuild_ids()
        journal = self._live_journal()
        journal.offset = 0
        for op in journal.read_new():
            self._apply(op)

    def _apply(self, op: Record) -> None:
        """Apply one journaled operation to the in-memory table (idempotent when replayed)."""
        kind = op.get("op")
        raw = self._raw()
        if kind == "batch":
            for inner in op["ops"]:
                self._apply(inner)
        elif kind == "put":
            clip_id = str(op["r"]["clip_id"])
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                doc_id = self._ids[clip_id] = self._next_id
                self._next_id += 1
            raw[str(doc_id)] = op["r"]
        elif kind == "update" and op["id"] in self._ids:
            raw[str(self._ids[op["id"]])].update(op["set"])
        elif kind == "remove" and op["id"] in self._ids:
            del raw[str(self._ids.pop(op["id"]))]
        elif kind not in ("update", "remove"):
            raise IndexCorrupt(f"{self.root / JOURNAL}: unknown operation {kind!r}")
        self._table.clear_cache()

    def _raw(self) -> dict[str, Record]:
        """The table's documents by doc id (TinyDB's own dict: the query layer sees changes)."""
        return self._storage.data.setdefault(TABLE, {})

    def _live_journal(self) -> Journal:
        if self._journal is None:
            raise ValueError("the clip index is closed")
        return self._journal

    def _snapshot_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._snapshot)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _rebuild_ids(self) -> None:
        raw = self._raw()
        self._ids = {str(doc["clip_id"]): int(key) for key, doc in raw.items()}
        self._next_id = max(self._ids.values(), default=0) + 1

    def _close_files(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

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
        """Delete temp files of snapshots a crash interrupted (old enough not to be in flight)."""
        cutoff = time.time() - STALE_TEMP_S
        for tmp in self.root.glob(f".{SNAPSHOT}.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:
                continue
