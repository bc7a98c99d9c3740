"""Large copies through O_DIRECT: the disk writes from our buffers and reads back into one.

A buffered copy costs the CPU three page-cache copies per byte (recorder → us, us → cache,
cache → us for the read-back) and a second SHA-256 pass, and on a 2-core dock that, not the
disk, was the limit (issue 14: 3.7 to 5 s of CPU a GiB against 1 s for `cp`). Here the
recorder's file is read with O_DIRECT into a ring of page-aligned buffers, each is hashed once,
written with O_DIRECT, then read back from the disk into a verify buffer and compared byte for
byte with the buffer that was hashed and written: every byte of the copy is proved as the disk
returns it, against the very bytes the recorded SHA-256 was computed over.

Four threads overlap: a reader fills buffers from the recorder, the bay thread hashes them, a
writer writes them, a verifier reads each window back and compares it. The last window is
read back only by prove(), after the truncate and the fsync, as a buffered large copy's is.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.evidence.diskio import (
    CopyCancelled,
    SourceReadError,
    VerifyFailed,
    fsync,
    memcmp,
    raise_disk_error,
)
from agent.evidence.ring import ALIGN, MIN_WINDOW, WINDOW, Ring, windows
from firmware_interface.directio import DirectFile

_memcmp = memcmp
_pwrite = os.pwrite  # the one call that hands the disk our bytes (a test makes it lie)


def _aligned(size: int) -> int:
    """`size` rounded up to ALIGN (a last window is written and read back padded)."""
    return -(-size // ALIGN) * ALIGN


def open_target(path: os.PathLike[str] | str) -> int | None:
    """Create `path` for a direct copy: its descriptor, or None where O_DIRECT is refused."""
    if _memcmp is None:
        return None
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_DIRECT
    try:
        return os.open(path, flags, 0o440)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the file system has no direct I/O
            Path(path).unlink(missing_ok=True)  # made, perhaps, before the flag was refused
            return None
        raise


def open_source(src: BinaryIO) -> DirectFile | None:
    """The recorder's file for O_DIRECT reads, None to read it as it is (a stream, say).

    A driver that maps its files' read errors offers `direct_source()` (mass storage does);
    a plain file not yet read from is reopened here.
    """
    for layer in (src, getattr(src, "raw", None)):  # the driver's file, or inside its buffer
        offer = getattr(layer, "direct_source", None)
        if callable(offer):
            source: DirectFile | None = offer()
            return source
    if not isinstance(src, io.FileIO | io.BufferedReader):
        return None
    try:
        if src.tell() != 0:
            return None
        return DirectFile.reopen(src.fileno())
    except (OSError, ValueError):
        return None


def _size(source: DirectFile | None) -> int | None:
    """The size of the recorder's file, when it is read directly (None: not known)."""
    if source is None:
        return None
    try:
        return os.fstat(source.fd).st_size
    except OSError:
        return None


@dataclass(frozen=True)
class _Window:
    slot: int  # which buffer of the ring
    offset: int
    size: int  # bytes of the clip in it (a last one is padded to ALIGN when written)
    last: bool  # shorter than asked for: the end of the file


class DirectCopy:
    """One large copy through O_DIRECT: copy() in the bay thread, prove() once it returned."""

    def __init__(self, fd: int, window: int | None = None) -> None:
        self.fd = fd
        self.window = window or WINDOW
        self.done = 0  # bytes read back from disk and found equal so far
        self._ring = Ring(self.window)
        self._filled: queue.SimpleQueue[_Window | BaseException] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Window | None] = queue.SimpleQueue()
        self._to_check: queue.SimpleQueue[_Window | None] = queue.SimpleQueue()
        self._written = threading.Event()
        self._held: _Window | None = None  # the last window, read back by prove()
        self._error: BaseException | None = None
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._counted = False  # in `windows.active`

    def copy(
        self,
        src: BinaryIO,
        progress: Callable[[int], None],
        cancel: threading.Event,
    ) -> tuple[str, int]:
        """Copy `src` into the file, hashing every byte: (sha256, size) once all is written."""
        source = open_source(src)
        windows.enter()
        self._counted = True
        try:
            self._start(src, source)
            h = hashlib.sha256()
            while True:
                item = self._filled.get()
                if isinstance(item, BaseException):
                    raise item
                if cancel.is_set():
                    raise CopyCancelled("copy cancelled")
                self._raise_error()
                if item.size:
                    h.update(self._ring.views[item.slot][: item.size])
                    progress(item.size)
                    self._to_write.put(item)
                else:
                    self._ring.free.put(item.slot)
                if item.last:
                    break
            self._to_write.put(None)
            self._written.wait()
            self._raise_error()
            return h.hexdigest(), item.offset + item.size
        except BaseException:
            self.stop()
            raise
        finally:
            self._join_reader()
            if source is not None:
                source.close()

    def prove(self, size: int, sha256: str) -> None:
        """Truncate the padding, fsync, read the last window back: VerifyFailed if any differs.

        The read-back is compared byte for byte with the buffers `sha256` was computed over,
        so the hash is not computed a second time.
        """
        del sha256
        self._join()
        self._raise_error()
        os.ftruncate(self.fd, size)  # a last window was written padded to ALIGN
        fsync(self.fd)
        if self._held is not None:
            self._check(self._held)
            self._held = None
        if self.done != size:
            raise VerifyFailed(f"read back {self.done} of {size} bytes")

    def stop(self) -> None:
        """Abandon the copy (it failed or was cancelled) and wait for the threads (idempotent)."""
        self._stop = True
        self._ring.free.put(None)
        self._join()

    def close(self) -> None:
        """Stop, close the copy's descriptor and give the buffers back (idempotent)."""
        self.stop()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._ring.release()
        if self._counted:
            self._counted = False
            windows.leave()

    # ---- the threads --------------------------------------------------------------------

    def _start(self, src: BinaryIO, source: DirectFile | None) -> None:
        for name, target in (
            ("reader", lambda: self._read(src, source)),
            ("writer", self._write),
            ("verifier", self._verify),
        ):
            thread = threading.Thread(target=target, name=f"store-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, src: BinaryIO, source: DirectFile | None) -> None:
        offset = 0
        total = _size(source)
        while (slot := self._ring.free.get()) is not None and not self._stop:
            want = min(windows.size(), self.window)
            if total is not None and total - offset < want:
                want = MIN_WINDOW  # the end in small windows: little left to do after it
            try:
                size, source = self._fill(src, source, self._ring.use(slot, want), offset)
            except OSError as exc:
                error = SourceReadError(f"reading the recorder failed: {exc.strerror or exc}")
                self._filled.put(error)
                return
            except BaseException as exc:  # the driver's own (RecorderGone): raised as it is
                self._filled.put(exc)
                return
            self._filled.put(_Window(slot, offset, size, size < want))
            if size < want:
                return
            offset += size

    @staticmethod
    def _fill(
        src: BinaryIO, source: DirectFile | None, view: memoryview, offset: int
    ) -> tuple[int, DirectFile | None]:
        """Read the window at `offset` into `view`: (bytes, the source to go on with)."""
        if source is not None:
            try:  # one read of the whole window: short only at the end of the file
                return source.read(view, offset), source
            except OSError as exc:
                if exc.errno != errno.EINVAL or offset:
                    raise
                source = None  # no direct I/O on the recorder's file system: read it buffered
        size = 0
        readinto = src.readinto  # type: ignore[attr-defined]
        while size < len(view) and (n := readinto(view[size:])):
            size += n
        return size, source

    def _write(self) -> None:
        while (item := self._to_write.get()) is not None:
            if self._error is None and not self._stop:
                try:
                    self._write_window(item)
                except BaseException as exc:
                    self._error = exc
            self._to_check.put(item)
        self._written.set()
        self._to_check.put(None)

    def _write_window(self, item: _Window) -> None:
        length = _aligned(item.size)
        view = self._ring.views[item.slot]
        view[item.size : length] = bytes(length - item.size)
        done = 0
        try:
            while done < length:
                done += _pwrite(self.fd, view[done:length], item.offset + done)
        except OSError as exc:
            raise_disk_error(exc)

    def _verify(self) -> None:
        """Read each window back once it is written: the last is left for prove()."""
        while (item := self._to_check.get()) is not None:
            if item.last:
                self._held = item
                continue
            if self._error is None and not self._stop:
                try:
                    self._check(item)
                except BaseException as exc:
                    self._error = exc
            self._ring.free.put(item.slot)

    def _check(self, item: _Window) -> None:
        length = _aligned(item.size)
        got = os.preadv(self.fd, [self._ring.use(self._ring.check, length)], item.offset)
        if got < item.size or not self._ring.same(item.slot, item.size):
            where = f"bytes {item.offset}-{item.offset + item.size}"
            raise VerifyFailed(f"the disk gave back other bytes than were written ({where})")
        self.done = item.offset + item.size

    # ---- endings ------------------------------------------------------------------------

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _join_reader(self) -> None:
        if self._threads:
            self._ring.free.put(None)  # a reader waiting for a buffer ends
            self._threads[0].join()

    def _join(self) -> None:
        if not self._threads:
            return
        self._join_reader()
        self._to_write.put(None)
        for thread in self._threads[1:]:
            thread.join()
        self._threads.clear()
