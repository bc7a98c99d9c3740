"""Durable writes: a file holds its old content or its new content, never half; append logs."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike[str], mode: int = 0o750) -> list[Path]:
    """Create `path` and its missing parents so that their names survive a power cut.

    Each directory created is made durable by an fsync of its parent (a new name is only
    as durable as its directory). Returns the directories created, outermost first.
    """
    missing: list[Path] = []
    at = Path(path)
    while not at.is_dir():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            pass
        fsync_dir(directory.parent)
    return list(reversed(missing))


def write_bytes(
    path: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o640,
    tmp_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Atomically replace `path` with `data`: temp file, fsync, rename, fsync dir.

    `tmp_dir` (same file system) holds the temp file instead of the target's directory,
    so that a crash leaves its debris where start-up clears it (the store's `.incoming`).
    """
    target = Path(path)
    make_dirs(target.parent)
    where = target.parent if tmp_dir is None else Path(tmp_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=where)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o640) -> None:
    """Atomically replace `path` with `obj` as UTF-8 JSON."""
    data = json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    write_bytes(path, data, mode)


class flocked:  # noqa: N801 - used like a function: `with flocked(fd, fcntl.LOCK_EX):`
    """Hold an flock on a file descriptor (exclusion across processes: daemon and CLI)."""

    def __init__(self, fd: int, how: int) -> None:
        self._fd = fd
        self._how = how

    def __enter__(self) -> None:
        fcntl.flock(self._fd, self._how)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


TORN_CUT = "cut"  # a torn last line is cut off (it was never acknowledged)
TORN_MOVE_ASIDE = "move_aside"  # ... and its bytes are first kept beside the log, for people
_BACK_CHUNK = 64 * 1024


class AppendLog:
    """An append-only file of whole lines: each append is one write and one fsync.

    A line is acknowledged only once `append` returns; a crash can leave a torn last line
    (no newline), which is repaired before the next append by the configured policy. An
    append that fails is removed again, so it can never be replayed later.
    """

    def __init__(self, path: str | os.PathLike[str], torn: str = TORN_CUT) -> None:
        """Open (creating, with its directory entry made durable) the file at `path`."""
        self.path = Path(path)
        self.torn = torn
        created = not self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if created:
            fsync_dir(self.path.parent)

    def size(self) -> int:
        """The file's current size (another process may have appended)."""
        return os.fstat(self.fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the file from `offset`."""
        return os.pread(self.fd, length, offset)

    def complete_end(self, size: int | None = None) -> int:
        """The offset just past the last newline: where a torn last line begins."""
        end = self.size() if size is None else size
        pos = end
        while pos > 0:
            step = min(_BACK_CHUNK, pos)
            chunk = os.pread(self.fd, step, pos - step)
            at = chunk.rfind(b"\n")
            if at >= 0:
                return pos - step + at + 1
            pos -= step
        return 0

    def repair(self) -> int:
        """Cut off a torn last line (kept aside first under TORN_MOVE_ASIDE); the new size."""
        size = self.size()
        if size == 0 or os.pread(self.fd, 1, size - 1) == b"\n":
            return size
        keep = self.complete_end(size)
        torn = os.pread(self.fd, size - keep, keep)
        aside = ""
        if self.torn == TORN_MOVE_ASIDE:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = self.path.with_name(f"{self.path.name}.torn-{stamp}")
            write_bytes(target, torn)
            aside = f", kept in {target}"
        os.ftruncate(self.fd, keep)
        os.fsync(self.fd)
        logger.warning(
            "%s: torn last line (%d bytes, never acknowledged) cut off%s",
            self.path,
            len(torn),
            aside,
        )
        return keep

    def append(self, data: bytes) -> int:
        """Append whole lines (ending in a newline) durably; the file's size after them."""
        if not data.endswith(b"\n"):
            raise ValueError("an append-log write must end with a newline")
        before = self.repair()
        try:
            if os.write(self.fd, data) != len(data):
                raise OSError(f"{self.path}: short write (disk full?)")
            os.fsync(self.fd)
        except BaseException:
            os.ftruncate(self.fd, before)  # not acknowledged: must never be replayed
            raise
        return before + len(data)

    def truncate(self, size: int = 0) -> None:
        """Cut the file to `size` bytes, durably (its content is kept elsewhere now)."""
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
