"""Durable writes: a file either holds its old content or its new content, never half."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename or create inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o640) -> None:
    """Atomically replace `path` with `data`: temp file, fsync, rename, fsync dir."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line and fsync it before returning."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line if line.endswith("\n") else line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class flocked:  # noqa: N801 - used like a function: `with flocked(fd, fcntl.LOCK_EX):`
    """Hold an flock on a file descriptor (exclusion across processes: daemon and CLI)."""

    def __init__(self, fd: int, how: int) -> None:
        self._fd = fd
        self._how = how

    def __enter__(self) -> None:
        fcntl.flock(self._fd, self._how)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
