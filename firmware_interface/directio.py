"""A clip file reopened with O_DIRECT, for the store's large copies (agent/evidence/direct.py).

The disk puts the bytes straight into the reader's page-aligned buffer, without a copy
through the page cache. A driver whose files map read errors (mass_storage.GuardedReader)
offers `direct_source()` returning a DirectFile with the same mapping; a plain file is
reopened by the store itself.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable


class DirectFile:
    """Positional reads of one regular file opened with O_DIRECT (buffers page-aligned)."""

    def __init__(self, fd: int, on_error: Callable[[OSError], BaseException] | None = None) -> None:
        self.fd = fd
        self._on_error = on_error

    @classmethod
    def reopen(
        cls, fileno: int, on_error: Callable[[OSError], BaseException] | None = None
    ) -> DirectFile | None:
        """The file behind `fileno` opened again with O_DIRECT, None where that is refused.

        Reopened through /proc/self/fd: the same inode, whatever its name is now, so the
        checks made when it was first opened (no links, inside the volume) still hold.
        """
        try:
            before = os.fstat(fileno)
            if not stat.S_ISREG(before.st_mode):
                return None
            fd = os.open(f"/proc/self/fd/{fileno}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            return None
        after = os.fstat(fd)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            os.close(fd)
            return None
        return cls(fd, on_error)

    def read(self, view: memoryview, offset: int) -> int:
        """Read into `view` from `offset` (both aligned): short only at the end of the file."""
        try:
            return os.preadv(self.fd, [view], offset)
        except OSError as exc:
            if self._on_error is None or exc.errno == errno.EINVAL:
                raise  # EINVAL: no direct I/O here after all; the store reads it buffered
            raise self._on_error(exc) from exc

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
