"""A small copy's bytes kept in memory until the copy, read back from disk, is compared.

A small clip was hashed twice: once as it was copied, once more as it was read back from the
disk. Its bytes are now read into a buffer that is hashed and written from, and kept until
the batch is proved: the copy read back from the disk is compared byte for byte with the
very bytes the recorded SHA-256 was computed over (as a large clip's windows are, in
direct.py), so each byte is hashed once. The buffers of all bays share one budget; a clip
that does not fit in what is left is hashed again on read-back, as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from agent.evidence.diskio import CHUNK, CopyCancelled, memcmp, read_into, write_all

BUDGET = 32 * 1024 * 1024  # bytes of every bay's small copies held until they are proved
GRAIN = 16 * 1024  # buffers are made in multiples of this (a 200 KB photo: 208 KiB)
LARGEST = 2 * 1024 * 1024  # larger small clips are hashed again (bounds each read-back buffer)


_memcmp = memcmp


class _Buffer:
    """A reusable buffer and its address (for memcmp): its own mapping, so freeing it gives
    the memory back to the system (heap arenas of the bays' threads kept it: +50 MB RSS)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map)
        self._array: ctypes.Array[ctypes.c_char] | None = (ctypes.c_char * size).from_buffer(
            self._map
        )
        self.addr = ctypes.addressof(self._array)

    def free(self) -> None:
        """Unmap it (its pages are dropped even if a view of it is still held somewhere)."""
        self._array = None
        self.view.release()
        self._map.madvise(mmap.MADV_DONTNEED)
        try:
            self._map.close()
        except BufferError:
            pass  # closed when the last view goes


class _Pool:
    """The kept buffers of all bays: at most `total` bytes of them, reused while in use.

    Fresh memory costs a page fault and a clearing per 4 KiB, more than the hash it saves,
    so a buffer given back serves the next photo; once none is in use they are all freed.
    """

    def __init__(self, total: int) -> None:
        self._lock = threading.Lock()
        self.total = total
        self.held = 0  # bytes of all buffers, in use or free
        self.in_use = 0
        self._free: dict[int, list[_Buffer]] = {}  # by size

    def take(self, size: int) -> _Buffer | None:
        want = -(-size // GRAIN) * GRAIN
        with self._lock:
            for fits in range(want, 2 * want + 1, GRAIN):  # the smallest free one that fits
                if free := self._free.get(fits):
                    self.in_use += 1
                    return free.pop()
            while self.held + want > self.total and self._free:
                _, free = self._free.popitem()  # too small or too large: make room
                for buf in free:
                    self.held -= buf.size
                    buf.free()
            if self.held + want > self.total:
                return None
            self.held += want
            self.in_use += 1
        return _Buffer(want)

    def give(self, buf: _Buffer) -> None:
        with self._lock:
            self.in_use -= 1
            self._free.setdefault(buf.size, []).append(buf)
            if self.in_use == 0:  # the docking is done: give the memory back
                for free in self._free.values():
                    for each in free:
                        each.free()
                self.held = 0
                self._free.clear()


budget = _Pool(BUDGET)
_readback = threading.local()


def _readback_buffer(size: int) -> _Buffer:
    """This thread's buffer to read copies back into (grown as needed, never shrunk)."""
    buf: _Buffer | None = getattr(_readback, "buf", None)
    if buf is None or buf.size < size:
        if buf is not None:
            buf.free()
        buf = _readback.buf = _Buffer(-(-size // GRAIN) * GRAIN)
    return buf


class Kept:
    """The bytes of one small copy as they were hashed and written."""

    def __init__(self, buf: _Buffer, size: int) -> None:
        self._buf: _Buffer | None = buf
        self.size = size

    @classmethod
    def take(cls, size: int | None) -> Kept | None:
        """A buffer for a copy of `size` bytes, or None when the budget has no room."""
        if size is None or not 0 < size <= LARGEST or _memcmp is None:
            return None
        buf = budget.take(size)
        return None if buf is None else cls(buf, size)

    @property
    def held(self) -> bool:
        """Whether the bytes are still here (not yet released)."""
        return self._buf is not None

    def view(self) -> memoryview:
        """The buffer, `size` bytes of it."""
        assert self._buf is not None
        return self._buf.view[: self.size]

    def release(self) -> None:
        """Give the memory back to the budget (idempotent)."""
        if self._buf is not None:
            buf, self._buf = self._buf, None
            budget.give(buf)

    def same_on_disk(self, fd: int) -> bool:
        """Whether the file behind `fd` holds exactly these bytes, as the disk returns them."""
        assert self._buf is not None and _memcmp is not None
        back = _readback_buffer(self.size + 1)
        got = os.preadv(fd, [back.view[: self.size + 1]], 0)  # one more: a longer file differs
        return got == self.size and _memcmp(back.addr, self._buf.addr, self.size) == 0


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
    h = hashlib.sha256()
    view = kept.view()
    size = 0
    try:
        while size < len(view) and (n := read_into(src, view[size : size + CHUNK])):
            if cancel.is_set():
                raise CopyCancelled("copy cancelled")
            part = view[size : size + n]
            h.update(part)
            write_all(fd, part)
            size += n
            progress(n)
        extra = _rest(src, fd, h, progress, cancel) if size == len(view) else 0
    finally:
        view.release()
    if extra or size < kept.size:
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
    """Copy what follows the expected size (a file grown since it was listed): mostly nothing,
    so the buffer that finds out is a small one."""
    buf = bytearray(GRAIN)
    view = memoryview(buf)
    extra = 0
    while n := read_into(src, view):
        if cancel.is_set():
            raise CopyCancelled("copy cancelled")
        h.update(view[:n])
        write_all(fd, view[:n])
        extra += n
        progress(n)
    return extra
