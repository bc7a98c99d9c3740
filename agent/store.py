"""The evidence store: one pass that reads, hashes and writes a clip, then proves the copy."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.durable import fsync_dir

logger = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
INCOMING = ".incoming"


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
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._name_lock = threading.Lock()

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
            sha, size = self._copy(src, tmp, progress, cancel)
            final, reused = self._place(tmp, self.root / dest_rel, sha)
        finally:
            tmp.unlink(missing_ok=True)
        if sha256_file(final) != sha:
            raise VerifyFailed(f"{final}: stored copy does not match sha256 {sha}")
        return StoredCopy(final, sha, size, reused)

    def _copy(
        self, src: BinaryIO, tmp: Path, progress: Callable[[int], None], cancel: threading.Event
    ) -> tuple[str, int]:
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o440)
        try:
            while n := _read(src, buf):
                if cancel.is_set():
                    raise CopyCancelled("copy cancelled")
                h.update(view[:n])
                _write_all(fd, view[:n])
                size += n
                progress(n)
            _fsync(fd)
        finally:
            os.close(fd)
        return h.hexdigest(), size

    def _place(self, tmp: Path, dest: Path, sha: str) -> tuple[Path, bool]:
        """Link the temp file into place without overwriting; reuse an identical file."""
        with self._name_lock:
            dest.parent.mkdir(parents=True, exist_ok=True)
            for candidate in (dest, dest.with_name(f"{dest.stem}_{sha[:12]}{dest.suffix}")):
                try:
                    os.link(tmp, candidate)
                except FileExistsError:
                    if sha256_file(candidate, drop_cache=False) == sha:
                        return candidate, True
                    continue
                fsync_dir(candidate.parent)
                fsync_dir(candidate.parent.parent)
                return candidate, False
        raise FileExistsError(f"{dest}: name taken by other content twice")


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


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("the dock's disk is full") from exc
        raise
