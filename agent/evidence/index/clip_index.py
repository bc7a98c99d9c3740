"""The clip index: a journaled TinyDB active set plus append-only archive shards for finished clips."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Table

from agent import durable
from agent.durable import flocked, make_dirs
from agent.evidence.index.archive import (
    ArchiveFollower,
    append_shard,
    complete_records,
    latest_in,
    shard_name,
)
from agent.evidence.index.journal import (
    IndexCorrupt,
    Journal,
    MemoryStorage,
    apply,
    dumps,
    plain,
)
from agent.evidence.index.records import Record, active_stats, copy_record, remove_stale

logger = logging.getLogger(__name__)

TABLE = "active"
SNAPSHOT = "active.json"
JOURNAL = "active.journal"
# Compact when the journal passes this: replay at start-up stays well under 0.1 s.
COMPACT_BYTES = 4 * 1024 * 1024
STALE_TEMP_S = 600.0


class ClipIndex:
    """Clip records: active ones in TinyDB (journaled), finished ones in append-only shards."""

    def __init__(self, data_dir: Path, compact_bytes: int = COMPACT_BYTES) -> None:
        """Open the index under data_dir/index; archive shards are not read here.

        A write that grows the journal past `compact_bytes` compacts it into the snapshot."""
        self.compact_bytes = compact_bytes
        self.root = Path(data_dir) / "index"
        self.archive_dir = self.root / "archive"
        make_dirs(self.archive_dir)
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
                return copy_record(self._raw()[str(doc_id)])
        return self._archived(clip_id)

    def get_many(self, clip_ids: Iterable[str]) -> dict[str, Record]:
        """The records of those clips that have one, as get() gives them, by clip id.

        One look at the disk for all (a batch of photos: not one per photo), and each archive
        shard read once.
        """
        found: dict[str, Record] = {}
        missing: dict[str, list[str]] = {}
        with self._lock:
            self._follow_disk()
            raw = self._raw()
            for clip_id in clip_ids:
                doc_id = self._ids.get(clip_id)
                if doc_id is not None:
                    found[clip_id] = copy_record(raw[str(doc_id)])
                else:
                    missing.setdefault(shard_name(clip_id), []).append(clip_id)
        shards = set(os.listdir(self.archive_dir)) if missing else set()
        for name, ids in missing.items():
            if name not in shards:
                continue  # one listing, not a failed open per shard
            try:
                data = (self.archive_dir / name).read_bytes()
            except FileNotFoundError:
                continue
            for clip_id in ids:
                if (record := latest_in(data, clip_id)) is not None:
                    found[clip_id] = record
        return found

    def active(self) -> list[Record]:
        """Every active (unfinished) record."""
        with self._lock:
            self._follow_disk()
            return [copy_record(doc) for doc in self._raw().values()]

    def find(self, **match: Any) -> list[Record]:
        """Active records whose fields equal all of `match` (one loop over the table's dict)."""
        pairs = tuple(match.items())
        with self._lock:
            self._follow_disk()
            return [
                copy_record(doc)
                for doc in self._raw().values()
                if all(key in doc and doc[key] == value for key, value in pairs)
            ]

    def iter_all(self) -> Iterator[Record]:
        """Every record, active and archived, each once in its latest version."""
        current = self.active()
        seen = {r["clip_id"] for r in current}
        yield from current
        for shard in sorted(self.archive_dir.glob("*.jsonl")):
            latest = {r["clip_id"]: r for r in complete_records(shard.read_bytes())}
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
        if not records:
            return
        # Each record is encoded once: the journal line is built from the same text that
        # gives the plain copy (refused here, before any state changes, if JSON cannot hold it).
        texts = [dumps(record) for record in records]
        puts = [f'{{"op":"put","r":{text}}}' for text in texts]
        ops = [{"op": "put", "r": json.loads(text)} for text in texts]
        op = ops[0] if len(ops) == 1 else {"op": "batch", "ops": ops}
        line = puts[0] if len(puts) == 1 else '{"op":"batch","ops":[' + ",".join(puts) + "]}"
        with self._mutating():
            self._commit(op, line)

    def update(self, clip_id: str, **changes: Any) -> Record:
        """Change fields of an active or archived clip and return the new record."""
        return self.change(clip_id, changes, lambda _record: False)

    def update_many(self, changes: dict[str, Record]) -> None:
        """Change fields of several clips as one durable transaction (one journal line, one
        sync: all or none); an archived clip among them gets its new version in its shard."""
        if not changes:
            return
        if any("clip_id" in fields for fields in changes.values()):
            raise ValueError("a clip's clip_id cannot change")
        clean = {clip_id: plain(fields) for clip_id, fields in changes.items()}
        with self._mutating():
            active = [cid for cid in clean if cid in self._ids]
            ops = [{"op": "update", "id": cid, "set": clean[cid]} for cid in active]
            if ops:
                self._commit(ops[0] if len(ops) == 1 else {"op": "batch", "ops": ops})
            for clip_id in clean.keys() - set(active):
                self._update_archived(clip_id, clean[clip_id])

    def change(self, clip_id: str, changes: Record, finished: Callable[[Record], bool]) -> Record:
        """Change fields of a clip and, when `finished` says so of the result, archive it.

        One operation under one lock: no reader sees the changed clip still active once
        finished. The way a clip's state changes (see agent.evidence.lifecycle.advance).
        """
        if "clip_id" in changes:
            raise ValueError("a clip's clip_id cannot change")
        clean = plain(changes)
        with self._mutating():
            doc_id = self._ids.get(clip_id)
            if doc_id is None:
                return self._update_archived(clip_id, clean)
            self._commit({"op": "update", "id": clip_id, "set": clean})
            record = copy_record(self._raw()[str(doc_id)])
            if finished(record):
                self._archive_held(clip_id)
            return record

    def archive(self, clip_id: str) -> None:
        """Move a finished clip from the active set to its shard (no-op if already there)."""
        with self._mutating():
            if self._ids.get(clip_id) is None:
                if self._archived(clip_id) is None:
                    raise KeyError(clip_id)
                return
            self._archive_held(clip_id)

    def import_archived(self, records: Iterable[Record]) -> int:
        """Append finished records straight to their shards in bulk (migration, benchmarks)."""
        by_shard: dict[str, list[str]] = {}
        for record in records:
            by_shard.setdefault(shard_name(record["clip_id"]), []).append(dumps(record) + "\n")
        with self._mutating():
            for name, lines in by_shard.items():
                append_shard(self.archive_dir / name, "".join(lines).encode("utf-8"))
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

    def _commit(self, op: Record, line: str | None = None) -> None:
        """Journal `op` (as `line` when already encoded) durably, then apply it in memory.

        Called with the flock held.
        """
        journal = self._live_journal()
        journal.append(((dumps(op) if line is None else line) + "\n").encode("utf-8"))
        self._apply(op)
        if journal.offset > self.compact_bytes:
            self._compact()

    def _compact(self) -> None:
        """Snapshot atomically, then empty the journal (called with the flock held).

        A crash between the two leaves a journal already in the snapshot: replaying it
        again is harmless, as every operation sets a state rather than changing one.
        """
        durable.write_bytes(self._snapshot, dumps(self._storage.data).encode("utf-8"))
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
        """Apply one journaled operation to the in-memory table (journal.apply gives its meaning)."""
        try:
            apply(_DocTable(self), op)
        except IndexCorrupt as exc:
            raise IndexCorrupt(f"{self.root / JOURNAL}: {exc}") from None
        self._table.clear_cache()

    def _archive_held(self, clip_id: str) -> None:
        """Move an active clip to its shard (called with the mutation lock held)."""
        record = self._raw()[str(self._ids[clip_id])]
        # Shard first: a crash in between leaves the clip in both places, never in neither.
        append_shard(self._shard(clip_id), (dumps(record) + "\n").encode("utf-8"))
        self._commit({"op": "remove", "id": clip_id})

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
        return latest_in(data, clip_id)

    def _update_archived(self, clip_id: str, changes: Record) -> Record:
        """Append a new version of an archived clip (called with the mutation lock held)."""
        record = self._archived(clip_id)
        if record is None:
            raise KeyError(clip_id)
        record.update(changes)
        append_shard(self._shard(clip_id), (dumps(record) + "\n").encode("utf-8"))
        return record

    def _remove_stale_temps(self) -> None:
        """Delete temp files of snapshots a crash interrupted (old enough not to be in flight)."""
        remove_stale(self.root, f".{SNAPSHOT}.*.tmp", STALE_TEMP_S)


class _DocTable:
    """The journal's Table over TinyDB's documents, which are keyed by doc id."""

    def __init__(self, index: ClipIndex) -> None:
        self.index = index

    def put(self, clip_id: str, record: Record) -> None:
        ix = self.index
        doc_id = ix._ids.get(clip_id)
        if doc_id is None:
            doc_id = ix._ids[clip_id] = ix._next_id
            ix._next_id += 1
        ix._raw()[str(doc_id)] = record

    def update(self, clip_id: str, fields: Record) -> None:
        doc_id = self.index._ids.get(clip_id)
        if doc_id is not None:
            self.index._raw()[str(doc_id)].update(fields)

    def remove(self, clip_id: str) -> None:
        doc_id = self.index._ids.pop(clip_id, None)
        if doc_id is not None:
            del self.index._raw()[str(doc_id)]
