"""The receiver's store: partial files assembled by offset, then verified and renamed into place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import durable
from agent.transfer import protocol as p
from agent.transfer.receiver.coverage import Coverage
from agent.transfer.receiver.expiry import (
    MANIFEST,
    PARTIAL_DIR,
    PartialEntry,
    is_complete_dir,
    read_partial,
    scan_partials,
    stale_partials,
)

logger = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20
COMMIT_BYTES = 32 << 20  # coverage is recorded durably at least this often ...
COMMIT_S = 1.0  # ... and this often, and whenever the receiver is idle


@dataclass
class Partial:
    """One file being assembled: its declared meta, open data file, coverage and running hash."""

    dir: Path
    meta: p.FileMeta
    fd: int
    coverage: Coverage
    hasher: Any = field(default_factory=hashlib.sha256)
    hashed_upto: int = 0
    dirty: bool = False
    saved: list[list[int]] = field(default_factory=list)  # the coverage last made durable
    failed: StorageError | None = None  # the first write error since `init`; fin reports it

    @property
    def data_path(self) -> Path:
        """The partial data file."""
        return self.dir / PARTIAL_DIR / "data"

    def account(self, offset: int, data: bytes) -> None:
        """Extend the running hash when `data` continues it; restart it on a rewrite."""
        if offset == self.hashed_upto:
            self.hasher.update(data)
            self.hashed_upto += len(data)
        elif offset < self.hashed_upto:
            self.hasher, self.hashed_upto = hashlib.sha256(), 0

    def forget_unsynced(self) -> None:
        """After a failed fsync: trust only the coverage last made durable, and hash it all again."""
        self.coverage = Coverage.from_json(self.saved)
        self.hasher, self.hashed_upto = hashlib.sha256(), 0
        self.dirty = False


class StorageError(p.ProtocolError):
    """The store could not write (disk full, I/O error); logged once where it happened."""


def storage_error(exc: OSError) -> StorageError:
    """The refusal for a failed write: no space is QUOTA_EXCEEDED, anything else unspecified."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(p.QUOTA_EXCEEDED, f"receiver: no space left ({_errno_name(exc)})")
    return StorageError(p.UNSPECIFIED_ERROR, f"receiver: could not write: {exc}")


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class TransferStore:
    """`{root}/{client_id}/{file_id}/{name}` + manifest.json, assembled under `.partial/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[tuple[str, str], Partial] = {}
        self._dirty_bytes = 0
        self._committed = time.monotonic()

    def file_dir(self, client_id: str, file_id: str) -> Path:
        """The directory of one transfer, refusing anything that could leave the store."""
        p.check_file_id(file_id)
        if p.path_component_problem(client_id, p.MAX_CLIENT_ID_BYTES):
            raise p.ProtocolError(p.NOT_AUTHORIZED, f"client id {client_id[:80]!r} is not usable")
        path = self.root / client_id / file_id
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise p.ProtocolError(p.NOT_AUTHORIZED, "transfer directory would leave the store")
        return path

    def is_complete(self, client_id: str, file_id: str) -> bool:
        """True when the file and its manifest are in place (a lost file is received again)."""
        return is_complete_dir(self.file_dir(client_id, file_id))

    def begin(self, client_id: str, cmd: p.Init) -> None:
        """Handle `init`: start, or resume, a partial file."""
        if cmd.meta.checksum != cmd.file_id:
            raise p.ProtocolError(p.PAYLOAD_FORMAT_INVALID, "init checksum differs from file_id")
        if self.is_complete(client_id, cmd.file_id):
            return
        try:
            self._begin(client_id, cmd)
        except OSError as exc:
            err = storage_error(exc)
            where = self.file_dir(client_id, cmd.file_id)
            logger.error("cannot start %s in %s: %s", cmd.meta.name, where, err.description)
            raise err from exc

    def _begin(self, client_id: str, cmd: p.Init) -> None:
        key = (client_id, cmd.file_id)
        current = self._open.get(key) or self._load(client_id, cmd.file_id)
        if current is not None and _same_file(current.meta, cmd.meta):
            current.meta, current.failed = cmd.meta, None  # a new attempt: coverage tells the rest
            self._open[key] = current
            _write_init(current.dir, current.meta)
            return
        if current is not None:
            self._drop(key, current)
        self._open[key] = self._create(self.file_dir(client_id, cmd.file_id), cmd.meta)

    def write_segment(self, client_id: str, cmd: p.Segment, data: bytes) -> None:
        """Handle one segment: bounds, hash, write at its offset (made durable by `commit`)."""
        part = self._writable(client_id, cmd.file_id)
        if part is not None:
            check_segment(part.meta.size, cmd, data)
            try:
                self._put(part, cmd.offset, data)
            except OSError as exc:
                raise self._failed(part, exc) from exc

    def write_checked(self, client_id: str, cmd: p.Segment, data: bytes) -> None:
        """Write a segment already passed by `check_segment` (and answered) on the network thread.

        A write error cannot be answered any more: it is remembered, and the fin reports it.
        """
        try:
            part = self._writable(client_id, cmd.file_id)
        except p.ProtocolError as exc:  # dropped meanwhile: fin will report the missing bytes
            logger.warning("segment of %s not kept: %s", cmd.file_id, exc.description)
            return
        if part is not None and cmd.offset + len(data) <= part.meta.size:
            try:
                self._put(part, cmd.offset, data)
            except OSError as exc:
                self._failed(part, exc)

    def declared_size(self, client_id: str, file_id: str) -> int | None:
        """The size declared by `init` for an open partial file, else None (safe from any thread).

        None too once a write of the file failed: its segments are then answered after the write.
        """
        part = self._open.get((client_id, file_id))
        return None if part is None or part.failed is not None else part.meta.size

    def _writable(self, client_id: str, file_id: str) -> Partial | None:
        """The open partial for a segment; None when the file is already complete."""
        part = self._open.get((client_id, file_id))
        if part is None:
            if self.is_complete(client_id, file_id):
                return None
            part = self._partial(client_id, file_id)
        return part

    def _failed(self, part: Partial, exc: OSError) -> StorageError:
        """Remember the first write error of a file since its `init`, logging it once."""
        if part.failed is None:
            part.failed = storage_error(exc)
            logger.error(
                "cannot store %s in %s: %s; its fin will fail",
                part.meta.name,
                part.dir,
                part.failed.description,
            )
        return part.failed

    def _put(self, part: Partial, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if part.coverage.covers(offset, end):
            return
        _pwrite_all(part.fd, data, offset)
        part.account(offset, data)
        part.coverage.add(offset, end)
        part.dirty = True
        self._dirty_bytes += len(data)

    def commit(self, force: bool = True) -> None:
        """Make written segments durable, then record them as held (when due, or `force`)."""
        due = self._dirty_bytes >= COMMIT_BYTES or time.monotonic() - self._committed >= COMMIT_S
        if not (force or due):
            return
        for part in self._open.values():
            if part.dirty:
                with contextlib.suppress(StorageError):  # remembered by _failed for the fin
                    self._commit_one(part)
        self._dirty_bytes, self._committed = 0, time.monotonic()

    def _commit_one(self, part: Partial) -> None:
        """fdatasync one file, then record its coverage; a failure is remembered for its fin."""
        self._sync(part, os.fdatasync)
        coverage = part.coverage.to_json()
        try:
            durable.write_json(part.dir / PARTIAL_DIR / "coverage.json", coverage)
        except OSError as exc:  # the data is durable; the record is retried at the next commit
            raise self._failed(part, exc) from exc
        part.saved, part.dirty = coverage, False

    def _sync(self, part: Partial, how: Any) -> None:
        """`how(fd)` (fsync or fdatasync); on failure what was not yet durable counts as lost."""
        try:
            how(part.fd)
        except OSError as exc:
            part.forget_unsynced()
            raise self._failed(part, exc) from exc

    def finish(self, client_id: str, cmd: p.Fin) -> None:
        """Handle `fin`: verify size and SHA-256, fsync, move the file and its manifest in place.

        Bytes a write error lost make the fin fail with that error (no space: QUOTA_EXCEEDED).
        """
        if self.is_complete(client_id, cmd.file_id):
            self._check_complete(client_id, cmd)
            return
        key = (client_id, cmd.file_id)
        part = self._partial(client_id, cmd.file_id)
        if (cmd.size, cmd.checksum) != (part.meta.size, part.meta.checksum):
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin size/checksum differ from init")
        if not part.coverage.covers(0, part.meta.size):
            if part.failed is not None:
                raise part.failed
            missing = part.meta.size - part.coverage.held()
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"fin: {missing} bytes not received")
        if _finish_hash(part) != part.meta.checksum:
            self._drop(key, part)
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin: file checksum mismatch; resend all")
        try:
            self._install(key, part)
        except OSError as exc:
            raise self._failed(part, exc) from exc
        logger.info("file complete: %s/%s (%s bytes)", client_id, cmd.file_id, cmd.size)

    def expire_partials(
        self, ttl: float, owns: Callable[[str], bool], now: float | None = None
    ) -> list[PartialEntry]:
        """Remove the partials of files `owns` accepts, idle longer than their TTL; return them.

        Runs on the thread that handles every command of those files (the receiver's worker that
        owns them), so no init or segment can race a removal. An open partial idle that long is
        closed first (its descriptor would keep the space in use); a partial with activity within
        its TTL, and complete files with their manifests, are never touched.
        """
        now = time.time() if now is None else now
        self._close_idle(ttl, now)
        entries = [
            replace(e, open=(e.client_id, e.file_id) in self._open)
            for e in scan_partials(self.root, owns)
        ]
        return [e for e in stale_partials(entries, now, ttl) if self._expire(e, now)]

    def _close_idle(self, ttl: float, now: float) -> None:
        """Close the open partials with nothing unsaved whose last activity is beyond their TTL."""
        for key, part in list(self._open.items()):
            entry = None if part.dirty else read_partial(part.dir, key[0])
            if entry is not None and stale_partials([entry], now, ttl):
                os.close(part.fd)
                del self._open[key]

    def _expire(self, entry: PartialEntry, now: float) -> bool:
        """Remove one stale partial (and its file directory when that is left empty); log it."""
        fdir = self.root / entry.client_id / entry.file_id
        if (entry.client_id, entry.file_id) in self._open or is_complete_dir(fdir):
            return False
        try:
            shutil.rmtree(fdir / PARTIAL_DIR)
        except OSError as exc:
            logger.warning("could not remove the expired partial %s: %s", fdir, exc)
            return False
        with contextlib.suppress(OSError):
            fdir.rmdir()  # only when empty
        age = now - entry.last_activity
        logger.info(
            "expired partial transfer %s/%s: %s bytes, idle %.0f s (%.1f days)",
            entry.client_id,
            entry.file_id,
            entry.size,
            age,
            age / 86400,
        )
        return True

    def close(self) -> None:
        """Commit and close every open partial file."""
        self.commit()
        for part in self._open.values():
            os.close(part.fd)
        self._open.clear()

    def _partial(self, client_id: str, file_id: str) -> Partial:
        key = (client_id, file_id)
        part = self._open.get(key) or self._load(client_id, file_id)
        if part is None:
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"no init for file {file_id}")
        self._open[key] = part
        return part

    def _load(self, client_id: str, file_id: str) -> Partial | None:
        pdir = self.file_dir(client_id, file_id) / PARTIAL_DIR
        try:
            meta = p.parse_init((pdir / "init.json").read_bytes())
            coverage = Coverage.from_json(json.loads((pdir / "coverage.json").read_bytes()))
        except FileNotFoundError:
            coverage = Coverage()
            if not (pdir / "init.json").is_file():
                return None
        except (p.ProtocolError, ValueError, OSError):
            logger.warning("unreadable partial state in %s; starting it over", pdir)
            return None
        fd = os.open(pdir / "data", os.O_RDWR | os.O_CREAT, 0o640)
        return Partial(
            dir=pdir.parent, meta=meta, fd=fd, coverage=coverage, saved=coverage.to_json()
        )

    def _create(self, fdir: Path, meta: p.FileMeta) -> Partial:
        """A new partial: its state files first, then the data file (no descriptor leaks on ENOSPC)."""
        pdir = fdir / PARTIAL_DIR
        pdir.mkdir(parents=True, exist_ok=True, mode=0o750)
        durable.write_json(pdir / "coverage.json", [])
        _write_init(fdir, meta)
        fd = os.open(pdir / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        part = Partial(dir=fdir, meta=meta, fd=fd, coverage=Coverage())
        try:
            durable.fsync_dir(fdir)
        except OSError:
            os.close(fd)
            raise
        return part

    def _drop(self, key: tuple[str, str], part: Partial) -> None:
        os.close(part.fd)
        shutil.rmtree(part.dir / PARTIAL_DIR, ignore_errors=True)
        self._open.pop(key, None)

    def _install(self, key: tuple[str, str], part: Partial) -> None:
        """fsync, write the manifest beside the data, then move both into place.

        Everything that needs space happens before anything moves: a full disk leaves the partial
        as it was (and the fin fails); the manifest, moved last, marks the file complete.
        """
        self._sync(part, os.fsync)
        pdir, final = part.dir / PARTIAL_DIR, part.dir / part.meta.name
        durable.write_json(pdir / MANIFEST, part.meta.user_data)
        os.replace(part.data_path, final)
        try:
            os.replace(pdir / MANIFEST, part.dir / MANIFEST)
        except OSError:
            with contextlib.suppress(OSError):
                os.replace(final, part.data_path)
            raise
        os.close(part.fd)
        del self._open[key]
        durable.fsync_dir(part.dir)
        shutil.rmtree(pdir, ignore_errors=True)
        durable.fsync_dir(part.dir)

    def _check_complete(self, client_id: str, cmd: p.Fin) -> None:
        fdir = self.file_dir(client_id, cmd.file_id)
        files = [f for f in fdir.iterdir() if f.name != MANIFEST and not f.name.startswith(".")]
        if cmd.checksum != cmd.file_id or [f.stat().st_size for f in files] != [cmd.size]:
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin differs from the file already held")


def check_segment(size: int, cmd: p.Segment, data: bytes | bytearray) -> None:
    """Refuse a segment beyond the declared size or not matching its SHA-256."""
    end = cmd.offset + len(data)
    if end > size:
        raise p.ProtocolError(p.QUOTA_EXCEEDED, f"segment [{cmd.offset}, {end}) beyond size")
    if p.sha256_hex(data) != cmd.checksum:
        raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"segment at {cmd.offset}: checksum mismatch")


def _write_init(fdir: Path, meta: p.FileMeta) -> None:
    """Record the declared meta of a partial durably."""
    durable.write_bytes(fdir / PARTIAL_DIR / "init.json", json.dumps(asdict(meta)).encode())


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset`, or raise the error that stopped it (ENOSPC).

    A short write (a disk filling up) is continued rather than its missing tail counted as held.
    """
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view, offset = view[written:], offset + written


def _same_file(a: p.FileMeta, b: p.FileMeta) -> bool:
    return (a.name, a.size, a.checksum) == (b.name, b.size, b.checksum)


def _finish_hash(part: Partial) -> str:
    """The SHA-256 of the whole partial file, reading only what the running hash has not seen."""
    hasher, pos = part.hasher.copy(), part.hashed_upto
    while pos < part.meta.size:
        chunk = os.pread(part.fd, min(_READ_CHUNK, part.meta.size - pos), pos)
        if not chunk:
            break
        hasher.update(chunk)
        pos += len(chunk)
    return str(hasher.hexdigest())
