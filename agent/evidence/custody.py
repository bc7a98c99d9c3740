"""The custody log (SPEC 8): an append-only, hash-chained, fsynced record of what happened."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.durable import TORN_MOVE_ASIDE, AppendLog, flocked, make_dirs

logger = logging.getLogger(__name__)

FILE_NAME = "custody.jsonl"
ZERO_HASH = "0" * 64
RESERVED = frozenset({"seq", "ts", "event", "prev", "hash", "chain_id"})
_TAIL_CHUNK = 64 * 1024


class CustodyError(Exception):
    """The custody log cannot be continued safely (its last complete line is corrupt)."""


def canonical(entry: dict[str, Any]) -> str:
    """The canonical JSON text of an entry: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(
        entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of `entry` without its `hash` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def new_chain_id() -> str:
    """A random chain id (32 lowercase hex), drawn once, when a log's first entry is written."""
    return secrets.token_hex(16)


def chain_id_of(first: dict[str, Any]) -> str:
    """The chain id a log's first entry names; for logs begun before chain ids, derived.

    A log whose first entry has no `chain_id` (written before SPEC 8.1) gets the first 32 hex
    of that entry's hash: stable for as long as the entry is, and unique to the chain.
    """
    named = first.get("chain_id")
    if isinstance(named, str) and named:
        return named
    return str(first.get("hash", ZERO_HASH))[:32]


def seal(
    seq: int, ts: str, event: str, prev: str, fields: dict[str, Any], chain_id: str = ""
) -> dict[str, Any]:
    """Build a complete entry (with `hash`) from its parts; `chain_id` goes in a first entry."""
    return sealed_line(seq, ts, event, prev, fields, chain_id)[0]


def sealed_line(
    seq: int, ts: str, event: str, prev: str, fields: dict[str, Any], chain_id: str = ""
) -> tuple[dict[str, Any], str]:
    """seal() and the entry's canonical line, the JSON encoded once for both.

    Sorted keys put `hash` between the keys before it and those after: the canonical text
    of the entry without its hash (what is hashed) and with it (the line) share both parts.
    """
    clash = RESERVED.intersection(fields)
    if clash:
        raise ValueError(f"custody fields may not be named {', '.join(sorted(clash))}")
    entry: dict[str, Any] = {"seq": seq, "ts": ts, "event": event, **fields, "prev": prev}
    if chain_id:
        entry["chain_id"] = chain_id
    before = canonical({k: v for k, v in entry.items() if k < "hash"})[1:-1]
    after = canonical({k: v for k, v in entry.items() if k > "hash"})[1:-1]
    body = "{" + ",".join(part for part in (before, after) if part) + "}"
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    entry["hash"] = digest
    line = "{" + ",".join(part for part in (before, f'"hash":"{digest}"', after) if part) + "}"
    return entry, line


def now_iso() -> str:
    """The current true time, UTC, ISO 8601 with offset."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _tail(fd: int, size: int) -> tuple[int, bytes]:
    """(offset, bytes) of the file's end, far enough back to hold its last complete line."""
    start = size
    buf = b""
    # Two newlines bound the last complete line; the start of the file bounds the first.
    while start > 0 and buf.count(b"\n") < 2:
        step = min(_TAIL_CHUNK, start)
        start -= step
        buf = os.pread(fd, step, start) + buf
    return start, buf


def _split_tail(start: int, buf: bytes) -> tuple[bytes, int]:
    """(last complete line, offset where the torn remainder begins) from a tail buffer."""
    end = buf.rfind(b"\n")
    if end < 0:
        return b"", start
    begin = buf.rfind(b"\n", 0, end) + 1
    return buf[begin:end], start + end + 1


class CustodyLog:
    """Appends chained entries to custody.jsonl; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        """Open (creating) the log and read its head from the end of the file."""
        self.path = Path(path)
        make_dirs(self.path.parent)
        self._lock = threading.Lock()
        self._log = AppendLog(self.path, torn=TORN_MOVE_ASIDE)
        self._fd = self._log.fd
        self._head: tuple[int, str] = (0, ZERO_HASH)
        self._size = -1
        try:
            with self._lock, flocked(self._fd, fcntl.LOCK_EX):
                self._refresh(repair=True)
        except BaseException:
            self._log.close()
            raise

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one entry, fsync it, and return it with its seq and hash."""
        return self.append_many([(event, fields)])[0]

    def append_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Append consecutive entries with one write and one fsync; all are durable on return."""
        if not items:
            return []
        with self._lock, flocked(self._fd, fcntl.LOCK_EX):
            # Another process (a CLI command) may have appended since our last look.
            if os.fstat(self._fd).st_size != self._size:
                self._refresh(repair=True)
            entries, lines = self._chain(items)
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            try:
                self._size = self._log.append(data)
            except OSError as exc:
                self._size = -1
                raise OSError(f"{self.path}: custody entry not written: {exc}") from exc
            self._head = (entries[-1]["seq"], entries[-1]["hash"])
            return entries

    def _chain(
        self, items: list[tuple[str, dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Sealed entries for `items`, continuing the chain from the current head, and their
        canonical lines."""
        seq, prev = self._head
        entries, lines = [], []
        for event, fields in items:
            seq += 1
            # SPEC 8.1: the chain's id is fixed by, and written in, its first entry.
            chain = new_chain_id() if seq == 1 else ""
            entry, line = sealed_line(seq, now_iso(), event, prev, fields, chain)
            prev = entry["hash"]
            entries.append(entry)
            lines.append(line)
        return entries, lines

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, 64 zeros) when the log is empty."""
        with self._lock:
            if os.fstat(self._fd).st_size != self._size:
                with flocked(self._fd, fcntl.LOCK_SH):
                    self._refresh(repair=False)
            return self._head

    def close(self) -> None:
        """Close the log file."""
        with self._lock:
            self._log.close()
            self._fd = -1

    def _refresh(self, repair: bool) -> None:
        """Re-read the head from the end of the file; a torn tail is cut (kept aside) when repairing."""
        size = self._log.repair() if repair else self._log.size()
        start, buf = _tail(self._fd, size)
        line, torn_at = _split_tail(start, buf)
        self._head = _head_of(line, self.path)
        # A torn tail left in place forces the next append to look again (and repair).
        self._size = size if torn_at == size else -1


def _head_of(line: bytes, path: Path) -> tuple[int, str]:
    """(seq, hash) of the last complete line, refusing to continue a corrupt one."""
    if not line:
        return 0, ZERO_HASH
    try:
        entry = json.loads(line)
        return int(entry["seq"]), str(entry["hash"])
    except (ValueError, KeyError, TypeError):
        raise CustodyError(
            f"{path}: the last complete line is not a custody entry; "
            "run `dock-agent verify` and restore the log before appending"
        ) from None


def read_head(path: Path) -> tuple[int, str]:
    """(seq, hash) of a log's last complete entry, read-only (for status readers)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, ZERO_HASH
    try:
        with flocked(fd, fcntl.LOCK_SH):
            line, _ = _split_tail(*_tail(fd, os.fstat(fd).st_size))
        return _head_of(line, Path(path))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Cut:
    """A custody log at one moment: its complete lines end at byte `size`, the last is `seq`."""

    size: int
    seq: int
    hash: str


def read_cut(path: Path) -> Cut:
    """Where the log's complete lines end now, read under a shared lock (never mid-append)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Cut(0, 0, ZERO_HASH)
    try:
        with flocked(fd, fcntl.LOCK_SH):
            start, buf = _tail(fd, os.fstat(fd).st_size)
        line, end = _split_tail(start, buf)
        seq, head = _head_of(line, Path(path))
        return Cut(end, seq, head)
    finally:
        os.close(fd)


def _lines(path: Path, limit: int | None = None) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, newline-terminated) for each line of the file's first `limit` bytes."""
    with open(path, "rb") as fh:
        read = 0
        for number, raw in enumerate(fh, start=1):
            if limit is not None and read + len(raw) > limit:
                return
            read += len(raw)
            yield number, raw.rstrip(b"\n"), raw.endswith(b"\n")


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A JSON object from one line, or None when it is not one."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def iter_entries(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every readable entry of a custody log (of its first `limit` bytes), in order.

    Unreadable lines are logged and skipped.
    """
    for number, raw, complete in _lines(Path(path), limit):
        entry = _parse(raw)
        if entry is None:
            if complete:
                logger.warning("custody log %s line %d: not a JSON object, skipped", path, number)
            continue
        yield entry


def _check_entry(entry: dict[str, Any], expect_seq: int, expect_prev: str | None) -> list[str]:
    """Problems of one parsed entry against what the chain expects of it."""
    seq = entry.get("seq")
    problems: list[str] = []
    if seq != expect_seq:
        problems.append(f"seq {seq}: expected seq {expect_seq} (entries missing or reordered)")
    if entry.get("hash") != entry_hash(entry):
        problems.append(f"seq {seq}: hash does not match the entry's content (altered)")
    if expect_prev is not None and entry.get("prev") != expect_prev:
        problems.append(f"seq {seq}: prev does not match the hash of the entry before it")
    return problems


def verify_chain(path: Path, limit: int | None = None) -> list[str]:
    """Every break in the custody chain (of its first `limit` bytes), one line each."""
    problems: list[str] = []
    expect_seq = 1
    prev_hash: str | None = ZERO_HASH
    for number, raw, complete in _lines(Path(path), limit):
        entry = _parse(raw)
        if entry is None:
            what = "unparseable" if complete else "torn (no newline) and unparseable"
            problems.append(f"line {number} (after seq {expect_seq - 1}): {what}")
            expect_seq, prev_hash = expect_seq + 1, None
            continue
        problems.extend(f"line {number}, {p}" for p in _check_entry(entry, expect_seq, prev_hash))
        seq = entry.get("seq")
        expect_seq = (seq if isinstance(seq, int) else expect_seq) + 1
        prev_hash = entry.get("hash") if isinstance(entry.get("hash"), str) else None
    return problems
