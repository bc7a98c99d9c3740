"""A small copy's bytes kept in memory until the copy, read back from disk, is compared.

A small clip was hashed twice: once as it was copied, once more as it was read back from the
disk. Its bytes are now read into a buffer that is hashed and written from, and kept until
the batch is proved: the copy read back from the disk is compared byte for byte with the
very bytes the recorded SHA-256 was computed over (as a large clip's windows are, in
direct.py), so each byte is hashed once. The buffers of all bays share one budget; a clip
that does not fit in what is left is hashed again on read-back, as before.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from agent.evidence.diskio import CHUNK, CopyCancelled, SourceReadError, raise_disk_error

BUDGET = 32 * 1024 * 1024  # bytes of every bay's small copies held until they are proved


class _Budget:
    """How many bytes of kept copies may still be held (all bays together)."""

    def __init__(self, total: int) -> None:
        self._lock = threading.Lock()
        self.left = total

    def take(self, size: int) -> bool:
        with self._lock:
            if size > self.left:
                return False
            self.left -= size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.left += size


budget = _Budget(BUDGET)


class Kept:
    """The bytes of one small copy as they were hashed and written."""

    def __init__(self, size: int) -> None:
        self._size = size  # what was taken from the budget
        self.data: bytearray | None = bytearray(size)

    @classmethod
    def take(cls, size: int | None) -> Kept | None:
        """A buffer for a copy of `size` bytes, or None when the budget has no room."""
        if size is None or size <= 0 or not budget.take(size):
            return None
        return cls(size)

    def release(self) -> None:
        """Give the memory back to the budget (idempotent)."""
        if self.data is not None:
            self.data = None
            budget.give(self._size)

    def same_on_disk(self, fd: int) -> bool:
        """Whether the file behind `fd` holds exactly these bytes, as the disk returns them."""
        assert self.data is not None
        got = os.pread(fd, len(self.data) + 1, 0)  # one more: a longer file differs
        return got == self.data


def pump_kept(
    src: BinaryIO,
    fd: int,
    kept: Kept,
    progress: Callable[[int], None],
    cancel: threading.Event,
) -> tuple[str, int, Kept | None]:
    """Copy `src` to `fd` through `kept`'s buffer, hashing every byte: (sha256, size, kept).

    `kept` is returned holding the copied bytes, or released and None when the source was
    not the size the buffer was made for (its bytes then are hashed again on read-back).
    """
    assert kept.data is not None
    h = hashlib.sha256()
    view = memoryview(kept.data)
    size = 0
    try:
        while size < len(view) and (n := _read(src, view[size : size + CHUNK])):
            if cancel.is_set():
                raise CopyCancelled("copy cancelled")
            part = view[size : size + n]
            h.update(part)
            _write_all(fd, part)
            size += n
            progress(n)
        extra = _rest(src, fd, h, progress, cancel) if size == len(view) else 0
    finally:
        view.release()
    if extra or size < len(kept.data):
        kept.release()
        return h.hexdigest(), size + extra, None
    return h.hexdigest(), size, kept


def _rest(
    src: BinaryIO,
    fd: int,
    h: hashlib._Hash,
    progress: Callable[[int], None],
    cancel: threading.Event,
) -> int:
    """Copy what follows the expected size (a file grown since it was listed)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    extra = 0
    while n := _read(src, view):
        if cancel.is_set():
            raise CopyCancelled("copy cancelled")
        h.update(view[:n])
        _write_all(fd, view[:n])
        extra += n
        progress(n)
    return extra


def _read(src: BinaryIO, view: memoryview) -> int:
    try:
        return src.readinto(view) or 0  # type: ignore[attr-defined]
    except OSError as exc:
        raise SourceReadError(f"reading the recorder failed: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: memoryview) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise_disk_error(exc)
