"""The evidence store: one pass that reads, hashes and writes a clip, then proves the copy."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import itertools
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.durable import fsync_dir, make_dirs

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # fits the L2 cache: read, hash and write touch it while it is hot
WINDOW = 32 * 1024 * 1024  # a large copy is re-read from disk in windows of this size
INCOMING = ".incoming"
SMALL = 8 * 1024 * 1024  # files below this are offloaded in batches (stage, then commit)
_SYNC_FILE_RANGE_WRITE = 2


class DiskFull(Exception):
    """The dock's disk cannot take this clip; nothing was stored and nothing deleted."""


class CopyCancelled(Exception):
    """The copy was stopped (recorder undocked, daemon stopping); the partial was removed."""


class SourceReadError(Exception):
    """Reading the recorder failed mid-copy (unplugged, I/O error); the partial was removed."""


class VerifyFailed(Exception):
    """The stored copy did not hash to what was read from the recorder."""


@dataclass(frozen=True)
class StoredCopy:
    """A durable, verified copy in the store."""

    path: Path
    sha256: str
    size: int
    reused: bool  # an identical file was already there (re-dock after a crash)


@dataclass(frozen=True)
class Staged:
    """A copied and hashed file in `.incoming`, not yet durable, verified or in place."""

    tmp: Path
    dest_rel: Path
    sha256: str
    size: int


def sha256_file(path: Path, drop_cache: bool = True) -> str:
    """SHA-256 of a file as stored on disk (page cache dropped first, so the disk is read)."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        if drop_cache:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class EvidenceStore:
    """`{data_dir}/evidence/{device_id}/{date}/{file}`, written only through acquire()."""

    def __init__(self, data_dir: Path, reserve_bytes: int) -> None:
        self.root = data_dir / "evidence"
        self.incoming = self.root / INCOMING
        self.reserve_bytes = reserve_bytes
        make_dirs(self.incoming)
        self._name_lock = threading.Lock()
        self._serial = itertools.count()  # unique temp names within one thread's batch

    def clean_incoming(self) -> list[str]:
        """Remove partial copies left by a crash; they were never indexed."""
        removed = []
        for part in self.incoming.iterdir():
            part.unlink(missing_ok=True)
            removed.append(part.name)
        if removed:
            logger.warning("removed %d partial copies left by an interrupted offload", len(removed))
        return removed

    def free_bytes(self) -> int:
        """Free bytes on the store's filesystem for us."""
        return shutil.disk_usage(self.root).free

    def has_room(self, size: int) -> bool:
        """Whether a clip of `size` bytes fits and leaves the reserve free."""
        return self.free_bytes() - size >= self.reserve_bytes

    def acquire(
        self,
        src: BinaryIO,
        dest_rel: Path,
        tag: str,
        progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> StoredCopy:
        """Copy `src` into the store at `dest_rel` (hash on the way), fsync, rename, verify."""
        tmp = self.incoming / f"{tag}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            sha, size, stored_sha = self._copy(src, tmp, progress, cancel)
            if stored_sha != sha:
                raise VerifyFailed(f"{tmp}: stored copy does not match sha256 {sha}")
            final, reused = self._place(tmp, self.root / dest_rel, sha)
        finally:
            tmp.unlink(missing_ok=True)
        if reused and sha256_file(final) != sha:
            raise VerifyFailed(f"{final}: stored copy does not match sha256 {sha}")
        return StoredCopy(final, sha, size, reused)

    def stage(
        self,
        src: BinaryIO,
        dest_rel: Path,
        tag: str,
        progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> Staged:
        """Copy `src` to a temp file, hashing every byte; commit() makes it durable and proves it."""
        n = next(self._serial)
        tmp = self.incoming / f"{tag}.{os.getpid()}.{threading.get_ident()}.{n}.part"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o440)
        try:
            sha, size = _pump(src, fd, progress, cancel, _ignore)
            _start_writeback(fd)  # the disk writes it while we copy the next file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return Staged(tmp, dest_rel, sha, size)

    def commit(self, staged: list[Staged]) -> list[StoredCopy]:
        """prove() then place(): durable, verified from disk, linked into place."""
        try:
            self.prove(staged)
        except BaseException:
            self.discard(staged)
            raise
        return self.place(staged)

    def prove(self, staged: list[Staged]) -> None:
        """fsync each staged file and verify it as read back from disk (VerifyFailed if not).

        Touches only the batch's own temp files, so it may run in another thread while the
        next batch is staged.
        """
        fds: list[int] = []
        try:
            for item in staged:
                fds.append(os.open(item.tmp, os.O_RDONLY | os.O_CLOEXEC))
            for fd in fds:
                _fsync(fd)  # Linux lets a read-only descriptor fsync
            for fd in fds:  # drop the cache, then ask for every file at once: a deep queue
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            for fd in fds:
                os.close(fd)
        for item in staged:  # read back from disk: the cache was dropped after the fsync
            if sha256_file(item.tmp, drop_cache=False) != item.sha256:
                raise VerifyFailed(f"{item.tmp}: stored copy does not match {item.sha256}")

    def place(self, staged: list[Staged]) -> list[StoredCopy]:
        """Link proved files into place, fsync each directory once, remove the temp files."""
        try:
            dirs: set[Path] = {self.root}
            placed = [self._place(i.tmp, self.root / i.dest_rel, i.sha256, dirs) for i in staged]
            for directory in sorted(dirs, key=lambda d: -len(d.parts)):
                fsync_dir(directory)
        finally:
            self.discard(staged)
        for (final, reused), item in zip(placed, staged, strict=True):
            if reused and sha256_file(final) != item.sha256:
                raise VerifyFailed(f"{final}: stored copy does not match sha256 {item.sha256}")
        return [
            StoredCopy(f, i.sha256, i.size, r) for (f, r), i in zip(placed, staged, strict=True)
        ]

    def discard(self, staged: list[Staged]) -> None:
        """Remove the temp files (their content is linked into place, or abandoned)."""
        for item in staged:
            item.tmp.unlink(missing_ok=True)

    def _copy(
        self, src: BinaryIO, tmp: Path, progress: Callable[[int], None], cancel: threading.Event
    ) -> tuple[str, int, str]:
        """(sha256 read, size, sha256 of the copy re-read from disk after fsync)."""
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o440)
        reread = _Reread(fd)
        try:
            sha, size = _pump(src, fd, progress, cancel, reread.written)
            _fsync(fd)
            return sha, size, reread.finish(size)
        finally:
            reread.stop()
            os.close(fd)

    def _place(
        self, tmp: Path, dest: Path, sha: str, dirs: set[Path] | None = None
    ) -> tuple[Path, bool]:
        """Link the temp file into place without overwriting; reuse an identical file.

        The directories to fsync are added to `dirs` when given (a batch syncs each once).
        """
        with self._name_lock:
            make_dirs(dest.parent)
            for candidate in (dest, dest.with_name(f"{dest.stem}_{sha[:12]}{dest.suffix}")):
                try:
                    os.link(tmp, candidate)
                except FileExistsError:
                    if sha256_file(candidate, drop_cache=False) == sha:
                        return candidate, True
                    continue
                if dirs is None:
                    fsync_dir(candidate.parent)
                    fsync_dir(candidate.parent.parent)
                else:
                    dirs.update((candidate.parent, candidate.parent.parent))
                return candidate, False
        raise FileExistsError(f"{dest}: name taken by other content twice")


class _Reread:
    """Re-reads a copy from disk while it is written: each full window once it is on disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = hashlib.sha256()
        self.done = 0  # bytes re-read and hashed so far
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._queued = 0
        self._abandoned = False

    def written(self, size: int) -> None:
        """`size` bytes are written: hand every completed window to the re-reading thread."""
        if self._error is not None:
            raise self._error
        if size - self._queued < WINDOW:
            return
        self._queued = size - size % WINDOW
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-reread", daemon=True)
            self._thread.start()
        self._queue.put(self._queued)

    def finish(self, size: int) -> str:
        """After the final fsync: wait for the windows, re-read the rest, return the hash."""
        self._join()
        if self._error is not None:
            raise self._error
        _reread(self.fd, self.done, size, self.hash)
        return self.hash.hexdigest()

    def stop(self) -> None:
        """Abandon the re-reading (the copy failed) and wait for the thread (idempotent)."""
        self._abandoned = True
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (end := self._queue.get()) is not None:
            if self._error is not None or self._abandoned:
                continue
            try:
                _fsync(self.fd, os.fdatasync)  # the window must be on disk before it is read back
                _reread(self.fd, self.done, end, self.hash)
                self.done = end
            except BaseException as exc:  # re-raised in the copying thread
                self._error = exc


def _reread(fd: int, start: int, end: int, h: Any) -> None:
    """Hash bytes [start, end) of a synced file as read from disk (page cache dropped first)."""
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while start < end:
        n = os.preadv(fd, [view[: min(CHUNK, end - start)]], start)
        if n == 0:
            raise VerifyFailed("stored copy is shorter than what was written")
        h.update(view[:n])
        start += n


def _pump(
    src: BinaryIO,
    fd: int,
    progress: Callable[[int], None],
    cancel: threading.Event,
    written: Callable[[int], None],
) -> tuple[str, int]:
    """Copy `src` to `fd`, hashing every byte on the way: (sha256, size)."""
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    while n := _read(src, buf):
        if cancel.is_set():
            raise CopyCancelled("copy cancelled")
        h.update(view[:n])
        _write_all(fd, view[:n])
        size += n
        written(size)
        progress(n)
    return h.hexdigest(), size


def _ignore(_size: int) -> None:
    """No re-reading while a small file is staged (commit() re-reads it whole)."""


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages without waiting (a hint: fsync is the guarantee)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def prefetch(src: BinaryIO) -> None:
    """Ask the kernel to start reading a source file now (a hint; files without one are skipped)."""
    try:
        os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _read(src: BinaryIO, buf: bytearray) -> int:
    try:
        return src.readinto(buf) or 0  # type: ignore[attr-defined]
    except OSError as exc:
        raise SourceReadError(f"reading the recorder failed: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: memoryview) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("the dock's disk is full") from exc
        raise


def _fsync(fd: int, sync: Callable[[int], None] = os.fsync) -> None:
    try:
        sync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("the dock's disk is full") from exc
        raise
