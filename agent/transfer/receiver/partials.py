"""The receiver's store: partial files assembled by offset, then verified and renamed into place."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent import durable
from agent.transfer import protocol as p
from agent.transfer.receiver.coverage import MAX_RANGES, Coverage
from agent.transfer.receiver.escape import escape_file_id
from agent.transfer.receiver.expiry import (
    MANIFEST,
    PARTIAL_DIR,
    PartialEntry,
    is_complete_dir,
    read_partial,
    remove_partial,
    scan_partials,
    stale_partials,
)
from agent.transfer.receiver.partfile import (
    DONE_INIT,
    Partial,
    StorageError,
    check_complete,
    check_ranges,
    check_segment,
    create_partial,
    meta_json,
    pwrite_all,
    read_meta,
    same_as_done,
    storage_error,
    unsigned_done,
)
from agent.transfer.receiver.quota import InProgress

__all__ = ["StorageError", "TransferStore", "check_segment", "storage_error"]

logger = logging.getLogger(__name__)

COMMIT_BYTES = 32 << 20  # coverage is recorded durably at least this often ...
COMMIT_S = 1.0  # ... and this often, and whenever the receiver is idle
MAX_OPEN = 64  # partials held in memory per store, each with at most one open descriptor
DEFAULT_MAX_FILE_BYTES = 64 << 30
Key = tuple[str, str]  # (client id, escaped file id)
Signed = Callable[[p.FileMeta], bool]  # does the client's key sign this (stored) init


def conflict() -> p.ProtocolError:
    """EMQX's answer to a re-init that differs from the first (SPEC 7.1)."""
    return p.ProtocolError(p.UNSPECIFIED_ERROR, p.FILEMETA_CONFLICT)


class TransferStore:
    """`{root}/{client_id}/{escaped file_id}/{name}` + manifest.json, assembled under `.partial/`.

    At most `max_open` partials are held in memory, least recently used first out (committed
    and closed; read back from disk when used again); a descriptor is opened on the first write.
    """

    def __init__(
        self,
        root: Path,
        in_progress: InProgress | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_open: int = MAX_OPEN,
    ) -> None:
        self.root = root
        self.in_progress = in_progress or InProgress(root, 16)
        self.max_file_bytes = max_file_bytes
        self.max_open = max_open
        self._open: OrderedDict[Key, Partial] = OrderedDict()
        self._dirty_bytes = 0
        self._committed = time.monotonic()

    def file_dir(self, client_id: str, file_id: str) -> Path:
        """The directory of one transfer, refusing anything that could leave the store."""
        p.check_any_file_id(file_id)
        if p.path_component_problem(client_id, p.MAX_CLIENT_ID_BYTES):
            raise p.ProtocolError(p.NOT_AUTHORIZED, f"client id {client_id[:80]!r} is not usable")
        path = self.root / client_id / escape_file_id(file_id)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise p.ProtocolError(p.NOT_AUTHORIZED, "transfer directory would leave the store")
        return path

    def is_complete(self, client_id: str, file_id: str) -> bool:
        """True when the file and its manifest are in place (a lost file is received again)."""
        return is_complete_dir(self.file_dir(client_id, file_id))

    def begin(self, client_id: str, cmd: p.Init, signed: Signed | None = None) -> None:
        """Handle `init`: start, or resume, a partial file; a differing re-init is refused.

        `signed` (keys on; `cmd` verified): a differing earlier init it cannot verify (HMAC-era,
        SPEC 11 migration) gives way: its partial starts over, a file held with it is kept.
        """
        if cmd.meta.size > self.max_file_bytes:
            raise p.ProtocolError(
                p.UNSPECIFIED_ERROR,
                f"init size {cmd.meta.size} exceeds max_file_bytes {self.max_file_bytes}",
            )
        fdir = self.file_dir(client_id, cmd.file_id)
        if is_complete_dir(fdir):
            if not same_as_done(fdir, cmd.meta) and not unsigned_done(fdir, cmd.meta, signed):
                raise conflict()
            return
        try:
            self._begin(client_id, cmd, fdir, signed)
        except OSError as exc:
            err = storage_error(exc)
            logger.error("cannot start %s in %s: %s", cmd.meta.name, fdir, err.description)
            raise err from exc

    def _begin(self, client_id: str, cmd: p.Init, fdir: Path, signed: Signed | None) -> None:
        key = (client_id, fdir.name)
        current = self._get(key)
        if current is not None and current.meta != cmd.meta and signed and not signed(current.meta):
            logger.warning("%s: partial begun by an unsigned init; started over", fdir)
            self._drop(key, current)
            current = None
        if current is not None:
            if current.meta != cmd.meta:
                raise conflict()
            current.failed = None  # a new attempt: coverage tells the rest
            with contextlib.suppress(OSError):  # activity, for expiry
                os.utime(fdir / PARTIAL_DIR / "init.json")
            return
        if not self.in_progress.admit(client_id, fdir.name):
            raise p.ProtocolError(
                p.QUOTA_EXCEEDED,
                f"client {client_id!r} has {self.in_progress.max_per_client} transfers in "
                "progress already",
            )
        try:
            part = create_partial(fdir, cmd.meta)
        except BaseException:
            self.in_progress.done(client_id, fdir.name)
            raise
        self._remember(key, part)

    def write_segment(self, client_id: str, cmd: p.Segment, data: bytes | bytearray) -> None:
        """Handle one segment: bounds, hash, ranges, write at its offset (durable at `commit`)."""
        part = self._writable(client_id, cmd.file_id)
        if part is not None:
            check_segment(part.meta.size, cmd, data)
            check_ranges(part, cmd.offset, cmd.offset + len(data))
            try:
                self._put(part, cmd.offset, data)
            except OSError as exc:
                raise self._failed(part, exc) from exc

    def write_checked(self, client_id: str, cmd: p.Segment, data: bytes | bytearray) -> None:
        """Write a segment already passed by `check_segment` (and answered) on the network thread.

        A write error cannot be answered any more: it is remembered, and the fin reports it.
        """
        try:
            part = self._writable(client_id, cmd.file_id)
        except p.ProtocolError as exc:  # dropped meanwhile: fin will report the missing bytes
            logger.warning("segment of %s not kept: %s", cmd.file_id[:80], exc.description)
            return
        if part is not None and cmd.offset + len(data) <= part.meta.size:
            try:
                self._put(part, cmd.offset, data)
            except OSError as exc:
                self._failed(part, exc)

    def declared_size(self, client_id: str, file_id: str) -> int | None:
        """The size declared by `init` for a partial in memory, else None (safe from any thread).

        None too once a write of the file failed (its segments are then answered after the
        write), or once it has half of MAX_RANGES ranges (the worker then checks each segment).
        """
        part = self._open.get((client_id, escape_file_id(file_id)))
        if part is None or part.failed is not None or len(part.coverage) >= MAX_RANGES // 2:
            return None
        return part.meta.size

    def _writable(self, client_id: str, file_id: str) -> Partial | None:
        """The partial for a segment; None when the file is already complete."""
        key = (client_id, escape_file_id(file_id))
        part = self._get(key)
        if part is None:
            if self.is_complete(client_id, file_id):
                return None
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"no init for file {file_id[:80]!r}")
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

    def _put(self, part: Partial, offset: int, data: bytes | bytearray) -> None:
        end = offset + len(data)
        if part.coverage.covers(offset, end):
            return
        pwrite_all(part.open_fd(), data, offset)
        part.account(offset, data)
        part.coverage.add(offset, end)
        part.dirty = True
        self._dirty_bytes += len(data)

    def commit(self, force: bool = True) -> None:
        """Make written segments durable, then record them as held (when due, or `force`)."""
        due = self._dirty_bytes >= COMMIT_BYTES or time.monotonic() - self._committed >= COMMIT_S
        if not (force or due):
            return
        for part in list(self._open.values()):
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
            how(part.open_fd())
        except OSError as exc:
            part.forget_unsynced()
            raise self._failed(part, exc) from exc

    def finish(self, client_id: str, cmd: p.Fin, signed: bool = False) -> str:
        """Handle `fin`: verify size and SHA-256, fsync, move the file and its manifest in place.

        Returns the file's SHA-256. The fin's checksum, when given, wins over the init's, except
        for a `signed` init, whose checksum was vouched for by the dock's key. Bytes a write
        error lost make the fin fail with that error (no space: QUOTA_EXCEEDED).
        """
        fdir = self.file_dir(client_id, cmd.file_id)
        if is_complete_dir(fdir):
            return check_complete(fdir, cmd)
        key = (client_id, fdir.name)
        part = self._get(key)
        if part is None:
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"no init for file {cmd.file_id[:80]!r}")
        declared = part.meta.checksum or None
        if cmd.size != part.meta.size or (signed and cmd.checksum not in (None, declared)):
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin size/checksum differ from init")
        if not part.coverage.covers(0, part.meta.size):
            if part.failed is not None:
                raise part.failed
            missing = part.meta.size - part.coverage.held()
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"fin: {missing} bytes not received")
        sha = part.whole_hash()
        expected = declared if signed else cmd.checksum or declared
        if expected is not None and sha != expected:
            if sha != declared:  # the bytes are wrong, not just the fin: start over
                self._drop(key, part)
            raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin: file checksum mismatch; resend all")
        try:
            self._install(key, part, sha)
        except OSError as exc:
            raise self._failed(part, exc) from exc
        logger.info("file complete: %s/%s (%s bytes)", client_id, fdir.name, cmd.size)
        return sha

    def expire_partials(
        self, ttl: float, owns: Callable[[str], bool], now: float | None = None
    ) -> list[PartialEntry]:
        """Remove the partials of transfers `owns` accepts, idle longer than their TTL; return them.

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
                part.close_fd()
                del self._open[key]

    def _expire(self, entry: PartialEntry, now: float) -> bool:
        """Remove one stale partial (and its file directory when that is left empty); log it."""
        fdir = self.root / entry.client_id / entry.file_id
        if (entry.client_id, entry.file_id) in self._open or is_complete_dir(fdir):
            return False
        if not remove_partial(fdir, entry, now):
            return False
        self.in_progress.done(entry.client_id, entry.file_id)
        return True

    def close(self) -> None:
        """Commit and close every open partial file."""
        self.commit()
        for part in self._open.values():
            part.close_fd()
        self._open.clear()

    def _get(self, key: Key) -> Partial | None:
        """The partial of a transfer, from memory or read back from disk; most recently used now."""
        part = self._open.get(key)
        if part is None:
            part = self._load(key)
            if part is None:
                return None
            self._remember(key, part)
        else:
            self._open.move_to_end(key)
        return part

    def _remember(self, key: Key, part: Partial) -> None:
        """Hold `part` in memory; the least recently used beyond `max_open` are committed, closed."""
        self._open[key] = part
        self._open.move_to_end(key)
        while len(self._open) > self.max_open:
            _old_key, old = self._open.popitem(last=False)
            if old.dirty:
                with contextlib.suppress(StorageError):
                    self._commit_one(old)
            old.close_fd()

    def _load(self, key: Key) -> Partial | None:
        pdir = self.root / key[0] / key[1] / PARTIAL_DIR
        if not (pdir / "init.json").is_file():
            return None
        try:
            meta, _ = read_meta(pdir / "init.json")
            try:
                coverage = Coverage.from_json(json.loads((pdir / "coverage.json").read_bytes()))
            except FileNotFoundError:
                coverage = Coverage()
        except (p.ProtocolError, ValueError, OSError, RecursionError):
            logger.warning("unreadable partial state in %s; starting it over", pdir)
            return None
        if meta.size > self.max_file_bytes:
            logger.warning("partial in %s declares more than max_file_bytes; ignored", pdir)
            return None
        return Partial(dir=pdir.parent, meta=meta, coverage=coverage, saved=coverage.to_json())

    def _drop(self, key: Key, part: Partial) -> None:
        part.close_fd()
        shutil.rmtree(part.dir / PARTIAL_DIR, ignore_errors=True)
        self._open.pop(key, None)
        self.in_progress.done(*key)

    def _install(self, key: Key, part: Partial, sha: str) -> None:
        """fsync, write the manifest and the first init beside the data, then move both in place.

        Everything that needs space happens before anything moves: a full disk leaves the partial
        as it was (and the fin fails); the manifest, moved last, marks the file complete.
        """
        self._sync(part, os.fsync)
        pdir, final = part.dir / PARTIAL_DIR, part.dir / part.meta.name
        durable.write_json(pdir / MANIFEST, part.meta.user_data)
        durable.write_bytes(part.dir / DONE_INIT, meta_json(part.meta, sha256=sha))
        os.replace(part.data_path, final)
        try:
            os.replace(pdir / MANIFEST, part.dir / MANIFEST)
        except OSError:
            with contextlib.suppress(OSError):
                os.replace(final, part.data_path)
            raise
        part.close_fd()
        del self._open[key]
        self.in_progress.done(*key)
        durable.fsync_dir(part.dir)
        shutil.rmtree(pdir, ignore_errors=True)
        durable.fsync_dir(part.dir)
