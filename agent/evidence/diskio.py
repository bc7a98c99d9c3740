"""The store's disk I/O: copy while hashing, durability calls, and read-back from the disk."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

CHUNK = 1024 * 1024  # fits the L2 cache: read, hash and write touch it while it is hot
WINDOW = 16 * 1024 * 1024  # a large copy is re-read from disk in windows of this size
_SYNC_FILE_RANGE_WRITE = 2
# File systems whose syncfs(2) writes back every dirty page, commits the metadata and
# flushes the disk's cache: as durable as an fsync of each file. Elsewhere (FUSE, NFS,
# overlays: syncfs may not reach the storage) every file gets its own fsync.
SYNCFS_TYPES = {
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
}


class DiskFull(Exception):
    """The dock's disk cannot take this clip; nothing was stored and nothing deleted."""


class CopyCancelled(Exception):
    """The copy was stopped (recorder undocked, daemon stopping); the partial was removed."""


class SourceReadError(Exception):
    """Reading the recorder failed mid-copy (unplugged, I/O error); the partial was removed."""


class VerifyFailed(Exception):
    """The stored copy did not hash to what was read from the recorder."""


_buffers = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    """This thread's copy buffer: allocating (and zeroing) 1 MiB per 200 KB photo costs more
    than copying the photo."""
    held: tuple[bytearray, memoryview] | None = getattr(_buffers, "held", None)
    if held is None:
        buf = bytearray(CHUNK)
        held = _buffers.held = (buf, memoryview(buf))
    return held


def sha256_file(path: os.PathLike[str] | str, drop_cache: bool = True) -> str:
    """SHA-256 of a file as stored on disk (page cache dropped first, so the disk is read)."""
    h = hashlib.sha256()
    buf, view = _buffer()
    with open(path, "rb", buffering=0) as fh:
        if drop_cache:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256_fd(fd: int) -> str:
    """SHA-256 of the whole file behind `fd` from its start (positional reads: the caller's
    offset is left alone), as the page cache or the disk returns it."""
    h = hashlib.sha256()
    buf, view = _buffer()
    offset = 0
    while n := os.preadv(fd, [buf], offset):
        h.update(view[:n])
        offset += n
    return h.hexdigest()


def pump(
    src: BinaryIO,
    fd: int,
    progress: Callable[[int], None],
    cancel: threading.Event,
    written: Callable[[int], None],
) -> tuple[str, int]:
    """Copy `src` to `fd`, hashing every byte on the way: (sha256, size)."""
    h = hashlib.sha256()
    buf, view = _buffer()
    size = 0
    while n := read_into(src, buf):
        if cancel.is_set():
            raise CopyCancelled("copy cancelled")
        h.update(view[:n])
        write_all(fd, view[:n])
        size += n
        written(size)
        progress(n)
    return h.hexdigest(), size


class Reread:
    """Re-reads a copy from disk while it is written: each full window once it is on disk."""

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        self.fd = fd
        self.window = window
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
        if size - self._queued < self.window:
            return
        self._queued = size - size % self.window
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="store-reread", daemon=True)
            self._thread.start()
        self._queue.put(self._queued)

    def finish(self, size: int) -> str:
        """After the final fsync: wait for the windows, re-read the rest, return the hash."""
        self._join()
        if self._error is not None:
            raise self._error
        reread(self.fd, self.done, size, self.hash)
        return self.hash.hexdigest()

    def prove(self, size: int, sha256: str) -> None:
        """fsync the copy, read back what the windows have not: VerifyFailed if it differs."""
        fsync(self.fd)
        if self.finish(size) != sha256:
            raise VerifyFailed(f"stored copy does not match sha256 {sha256}")

    def stop(self) -> None:
        """Abandon the re-reading (the copy failed) and wait for the thread (idempotent)."""
        self._abandoned = True
        self._join()

    def close(self) -> None:
        """Stop, and close the copy's descriptor (idempotent)."""
        self.stop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

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
                fsync(self.fd, os.fdatasync)  # the window must be on disk before it is read back
                reread(self.fd, self.done, end, self.hash)
                self.done = end
            except BaseException as exc:  # re-raised in the copying thread
                self._error = exc


def reread(fd: int, start: int, end: int, h: Any) -> None:
    """Hash bytes [start, end) of a synced file as read from disk (page cache dropped first).

    The whole range is asked for at once after the drop, so the disk reads it with a deep
    queue while it is hashed.
    """
    if end <= start:
        return
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_WILLNEED)
    _, view = _buffer()
    while start < end:
        n = os.preadv(fd, [view[: min(CHUNK, end - start)]], start)
        if n == 0:
            raise VerifyFailed("stored copy is shorter than what was written")
        h.update(view[:n])
        start += n


def _load_libc_fn(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_libc_fn(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
)
_syncfs = _load_libc_fn("syncfs", [ctypes.c_int])
_statfs = _load_libc_fn("statfs", [ctypes.c_char_p, ctypes.c_void_p])


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages without waiting (a hint: the sync is the guarantee)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def fs_type(path: os.PathLike[str] | str) -> int | None:
    """The file system magic number of `path` (statfs f_type), None when it cannot be read."""
    if _statfs is None:
        return None
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes; f_type comes first
    if _statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def syncfs_trusted(path: os.PathLike[str] | str) -> bool:
    """Whether one syncfs(2) of `path`'s file system makes every file in it durable."""
    return _syncfs is not None and fs_type(path) in SYNCFS_TYPES


def syncfs(path: os.PathLike[str] | str) -> None:
    """syncfs(2) of the file system holding `path`: every dirty page and name, then a flush.

    A descriptor opened now still reports a write-back error that no one has seen (the
    kernel's errseq), so an error of any file written before is raised here.
    """
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise_disk_error(OSError(err, f"syncfs {path}: {os.strerror(err)}"))
    finally:
        os.close(fd)


def prefetch(src: BinaryIO) -> None:
    """Ask the kernel to start reading a source file now (a hint; files without one are skipped)."""
    try:
        os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def read_into(src: BinaryIO, buf: bytearray | memoryview) -> int:
    """Read from the recorder into `buf`; how many bytes (a read error is SourceReadError)."""
    try:
        return src.readinto(buf) or 0  # type: ignore[attr-defined]
    except OSError as exc:
        raise SourceReadError(f"reading the recorder failed: {exc.strerror or exc}") from exc


def write_all(fd: int, data: memoryview) -> None:
    """Write all of `data` to the store (no room is DiskFull)."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise_disk_error(exc)


def fsync(fd: int, sync: Callable[[int], None] = os.fsync) -> None:
    """fsync (or `sync`) a descriptor; no room on the disk is DiskFull."""
    try:
        sync(fd)
    except OSError as exc:
        raise_disk_error(exc)


def raise_disk_error(exc: OSError) -> None:
    """Raise a failed write or sync: DiskFull when the disk has no room, else as it came."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFull("the dock's disk is full") from exc
    raise exc


def _load_memcmp() -> Callable[[int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None).memcmp  # a CDLL call releases the GIL while it runs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


memcmp = _load_memcmp()  # libc's memcmp over two addresses, or None where it cannot be loaded
