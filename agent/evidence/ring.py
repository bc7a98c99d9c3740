"""The buffers of the O_DIRECT copies (direct.py): a ring per copy, one budget for all."""

from __future__ import annotations

import ctypes
import mmap
import queue
import threading

from agent.evidence.diskio import memcmp

MiB = 1024 * 1024
WINDOW = 16 * MiB  # the largest window: split into requests the disk serves side by side
MIN_WINDOW = MiB
BUDGET = 64 * MiB  # buffer memory of all direct copies together (four bays: 4 MiB windows)
DEPTH = 3  # buffers in the ring (being read, hashed, written or read back), plus one to compare
ALIGN = 4096  # offsets, lengths and buffer addresses of O_DIRECT I/O (a page: every disk's block)


class _Windows:
    """How large the next window of a copy may be: the buffer budget shared by every copy.

    One copy alone reads and writes 16 MiB at a time (the disk gets four requests at once);
    with four bays copying, each gets 4 MiB windows, and the buffers it no longer uses are
    given back to the system, so the dock stays within its memory target.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def enter(self) -> None:
        with self._lock:
            self.active += 1

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def size(self) -> int:
        share = BUDGET // ((DEPTH + 1) * max(self.active, 1))
        window = MIN_WINDOW
        while window * 2 <= min(share, WINDOW):
            window *= 2
        return min(window, WINDOW)


windows = _Windows()


def _huge_map(size: int) -> mmap.mmap:
    """An anonymous mapping for a buffer of the ring, backed by huge pages where it can be.

    O_DIRECT pins the buffer's pages for every request and the block layer walks them: with
    4 KiB pages that is 4,096 pages a window of 16 MiB, three passes a byte; a 2 MiB page is
    pinned and mapped in one step (a hint: without transparent huge pages it changes nothing).
    """
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # not shmem
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            buf.madvise(advice)
        except OSError:
            pass
    return buf


class Ring:
    """DEPTH page-aligned buffers plus one to read back into, and their addresses for memcmp."""

    def __init__(self, window: int) -> None:
        self.maps = [_huge_map(window) for _ in range(DEPTH + 1)]
        self.views = [memoryview(m) for m in self.maps]
        self._arrays = [(ctypes.c_char * window).from_buffer(m) for m in self.maps]
        self.addrs = [ctypes.addressof(a) for a in self._arrays]
        self._used = [0] * (DEPTH + 1)  # bytes of each buffer that hold pages
        self.check = DEPTH  # the read-back buffer
        self.free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        for slot in range(DEPTH):
            self.free.put(slot)

    def use(self, slot: int, size: int) -> memoryview:
        """Buffer `slot` for a window of `size`: pages beyond it are given back if it shrank."""
        if self._used[slot] > size:
            self.maps[slot].madvise(mmap.MADV_DONTNEED, size, self._used[slot] - size)
        self._used[slot] = size
        return self.views[slot][:size]

    def release(self) -> None:
        """Give the buffers' memory back now, not when the copy is collected (idempotent).

        A view may still be held (by an exception's traceback, say): then the pages are
        dropped and the mapping itself goes when the last view does.
        """
        self._arrays.clear()
        for view in self.views:
            view.release()
        for buf in self.maps:
            if buf.closed:
                continue
            buf.madvise(mmap.MADV_DONTNEED)
            try:
                buf.close()
            except BufferError:
                pass

    def same(self, slot: int, size: int) -> bool:
        """Whether the read-back buffer holds what buffer `slot` holds, over `size` bytes."""
        assert memcmp is not None
        return memcmp(self.addrs[slot], self.addrs[self.check], size) == 0
