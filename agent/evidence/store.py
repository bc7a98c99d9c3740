"""The evidence store: one pass that reads, hashes and writes a clip, then proves the copy."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from agent.durable import fsync_dir, make_dirs
from agent.evidence.direct import DirectCopy, open_target
from agent.evidence.diskio import (
    CHUNK,
    WINDOW,
    CopyCancelled,
    DiskFull,
    Reread,
    SourceReadError,
    VerifyFailed,
    fsync,
    prefetch,
    pump,
    sha256_fd,
    sha256_file,
    start_writeback,
    syncfs,
    syncfs_trusted,
)
from agent.evidence.kept import Kept, pump_kept

__all__ = [
    "CHUNK",
    "INCOMING",
    "SMALL",
    "WINDOW",
    "CopyCancelled",
    "DiskFull",
    "EvidenceStore",
    "SourceReadError",
    "Staged",
    "StoredCopy",
    "VerifyFailed",
    "prefetch",
    "sha256_file",
]

logger = logging.getLogger(__name__)

INCOMING = ".incoming"
SMALL = 8 * 1024 * 1024  # files below this are offloaded in batches (stage, then commit)


@dataclass(frozen=True)
class StoredCopy:
    """A durable, verified copy in the store."""

    path: Path
    sha256: str
    size: int
    reused: bool  # an identical file was already there (re-dock after a crash)


class LargeCopy(Protocol):
    """A large copy read back from disk while it is written (direct.DirectCopy, diskio.Reread)."""

    done: int  # bytes read back from disk and found right so far

    def prove(self, size: int, sha256: str) -> None:
        """Make it durable and read back the rest: VerifyFailed if anything differs."""

    def close(self) -> None:
        """Stop its threads and close its descriptor (idempotent)."""


@dataclass(frozen=True)
class Staged:
    """A copied and hashed file in `.incoming`, not yet durable, verified or in place.

    A large one keeps its descriptor open, with the windows already read back from disk
    while it was copied (`reread`); prove() syncs it and reads back the rest. A small one
    may keep the bytes it was hashed over (`kept`): its read-back is compared with them.
    """

    tmp: Path
    dest_rel: Path
    sha256: str
    size: int
    reread: LargeCopy | None = field(default=None, compare=False, repr=False)
    kept: Kept | None = field(default=None, compare=False, repr=False)


class EvidenceStore:
    """`{data_dir}/evidence/{device_id}/{date}/{file}`, written only through stage()/commit()."""

    def __init__(
        self,
        data_dir: Path,
        reserve_bytes: int,
        *,
        trust_syncfs: bool | None = None,
        window_bytes: int = WINDOW,
    ) -> None:
        """`trust_syncfs`: whether one syncfs makes a batch durable here (None: judged from the
        file system, see diskio.syncfs_trusted; False: every file gets its own fsync).
        `window_bytes`: a large copy is read back from disk in windows of at most this size."""
        self.window_bytes = window_bytes
        self.root = data_dir / "evidence"
        self.incoming = self.root / INCOMING
        self.reserve_bytes = reserve_bytes
        make_dirs(self.incoming)
        self._name_lock = threading.Lock()
        self._serial = itertools.count()  # unique temp names within one thread's batch
        # One syncfs makes a whole batch durable where the file system honours it.
        trusted = syncfs_trusted(self.incoming) if trust_syncfs is None else trust_syncfs
        self.batch_syncfs = trusted
        # Large copies go through O_DIRECT on the same disk file systems (where it is refused,
        # or elsewhere, through the page cache with a read-back of each window after a sync).
        self.direct_io = self.batch_syncfs
        self._settled: set[Path] = set()  # directories whose own name this process synced

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
        """Copy `src` into the store at `dest_rel` (hash on the way), fsync, verify, place."""
        return self.commit([self.stage(src, dest_rel, tag, progress, cancel, large=True)])[0]

    def stage(
        self,
        src: BinaryIO,
        dest_rel: Path,
        tag: str,
        progress: Callable[[int], None],
        cancel: threading.Event,
        large: bool = False,
        temp: tuple[Path, int] | None = None,
        expect: int | None = None,
    ) -> Staged:
        """Copy `src` to a temp file, hashing every byte; commit() makes it durable and proves it.

        A `large` copy is read back from disk window by window while it is written (helper
        threads), so prove() has only its last window left to read back. A small one may
        come with its `temp` file made ahead (new_temp()); stage() owns it from then on.
        A small one of `expect` bytes keeps them while the budget allows (kept.py): its
        read-back is then compared with them instead of hashed a second time.
        """
        if large:
            tmp = self._temp_name(tag)
            if self.direct_io and (direct_fd := open_target(tmp)) is not None:
                return _stage_direct(
                    src, tmp, direct_fd, dest_rel, progress, cancel, self.window_bytes
                )
            fd = _create(tmp)
        else:
            tmp, fd = temp or self.new_temp(tag)
        reread = Reread(fd, self.window_bytes) if large else None
        kept = None if large else Kept.take(expect)
        try:
            if kept is not None:
                sha, size, kept = pump_kept(src, fd, kept, progress, cancel)
            else:
                sha, size = pump(src, fd, progress, cancel, reread.written if reread else _ignore)
        except BaseException:
            if kept is not None:
                kept.release()
            if reread is not None:
                reread.close()
            else:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if reread is None:
            if not self.batch_syncfs:  # the batch's syncfs writes it while the next is copied
                start_writeback(fd)  # the disk writes it while we copy the next file
            os.close(fd)
        return Staged(tmp, dest_rel, sha, size, reread, kept)

    def new_temp(self, tag: str) -> tuple[Path, int]:
        """A new temp file in `.incoming` for a small clip's copy: (path, descriptor).

        Creating a file waits for the journal while a batch is being synced, so the offload
        makes the next batch's temp files in a helper thread (agent/dock/ahead.py).
        """
        tmp = self._temp_name(tag)
        return tmp, _create(tmp)

    def _temp_name(self, tag: str) -> Path:
        n = next(self._serial)
        return self.incoming / f"{tag}.{os.getpid()}.{threading.get_ident()}.{n}.part"

    def commit(self, staged: list[Staged]) -> list[StoredCopy]:
        """prove() then place(): durable, verified from disk, linked into place."""
        try:
            self.prove(staged)
        except BaseException:
            self.discard(staged)
            raise
        return self.place(staged)

    def prove(self, staged: list[Staged]) -> None:
        """Make each staged file durable and verify it as read back from disk (VerifyFailed if not).

        Touches only the batch's own temp files (a syncfs writes others' pages too, but
        changes nothing of theirs), so it may run in another thread while the next batch
        is staged. Every file of the batch is completely written before this is called.
        """
        for item in staged:
            if item.reread is not None:
                _prove_large(item, item.reread)
        small = [item for item in staged if item.reread is None]
        if small:
            self._prove_small(small)

    def _prove_small(self, staged: list[Staged]) -> None:
        """One durability call for the batch, then each file read back with its cache dropped."""
        fds: list[int] = []
        try:
            for item in staged:
                fds.append(os.open(item.tmp, os.O_RDONLY | os.O_CLOEXEC))
            if self.batch_syncfs:
                syncfs(self.incoming)  # the batch was written: one commit and flush for all
            else:
                for fd in fds:
                    fsync(fd)  # Linux lets a read-only descriptor fsync
            for fd in fds:  # drop the cache, then ask for every file at once: a deep queue
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            # Read back from disk (the cache was dropped after the sync) through the same
            # descriptors: no second open and close per file.
            for item, fd in zip(staged, fds, strict=True):
                if not _reads_back_right(item, fd):
                    raise VerifyFailed(f"{item.tmp}: stored copy does not match {item.sha256}")
        finally:
            for fd in fds:
                os.close(fd)

    def place(self, staged: list[Staged]) -> list[StoredCopy]:
        """Link proved files into place, fsync each directory once, remove the temp files."""
        try:
            dirs: set[Path] = set()
            made: set[Path] = set()
            placed = [
                self._place(i.tmp, self.root / i.dest_rel, i.sha256, dirs, made) for i in staged
            ]
            # Not syncfs: that would also write out the next batch, still being copied.
            for directory in dirs:
                fsync_dir(directory)  # the new names
            self._settle_names(dirs)
        finally:
            self.discard(staged)
        for (final, reused), item in zip(placed, staged, strict=True):
            if reused and sha256_file(final) != item.sha256:
                raise VerifyFailed(f"{final}: stored copy does not match sha256 {item.sha256}")
        return [
            StoredCopy(f, i.sha256, i.size, r) for (f, r), i in zip(placed, staged, strict=True)
        ]

    def _settle_names(self, dirs: set[Path]) -> None:
        """Make the names of `dirs` and their parents durable, once per process for each.

        make_dirs() syncs the parent of every directory it creates; one that was already
        there (made before a crash, say) gets its parent synced here the first time.
        """
        todo = {d for leaf in dirs for d in (leaf, leaf.parent)} - self._settled
        for directory in sorted(todo, key=lambda d: -len(d.parts)):
            fsync_dir(directory.parent)
            self._settled.add(directory)

    def discard(self, staged: list[Staged]) -> None:
        """Remove the temp files (their content is linked into place, or abandoned)."""
        for item in staged:
            try:
                if item.kept is not None:
                    item.kept.release()
                if item.reread is not None:
                    item.reread.close()
            finally:
                item.tmp.unlink(missing_ok=True)

    def _place(
        self, tmp: Path, dest: Path, sha: str, dirs: set[Path], made: set[Path]
    ) -> tuple[Path, bool]:
        """Link the temp file into place without overwriting; reuse an identical file.

        The directories that get a new name are added to `dirs` (a batch syncs each once);
        `made` holds the directories this batch has already made sure of.
        """
        with self._name_lock:
            if dest.parent not in made:
                make_dirs(dest.parent)
                made.add(dest.parent)
            for candidate in (dest, dest.with_name(f"{dest.stem}_{sha[:12]}{dest.suffix}")):
                try:
                    os.link(tmp, candidate)
                except FileExistsError:
                    if sha256_file(candidate, drop_cache=False) == sha:
                        return candidate, True
                    continue
                dirs.add(candidate.parent)
                return candidate, False
        raise FileExistsError(f"{dest}: name taken by other content twice")


def _prove_large(item: Staged, reread: LargeCopy) -> None:
    """fsync a large copy, then read back what its windows have not (VerifyFailed if it differs)."""
    try:
        reread.prove(item.size, item.sha256)
    except VerifyFailed as exc:
        raise VerifyFailed(f"{item.tmp}: {exc}") from exc


def _reads_back_right(item: Staged, fd: int) -> bool:
    """A small copy as read back from disk through `fd` (its temp file, opened by the caller):
    equal to its kept bytes, or hashing to its sha256."""
    kept = item.kept
    if kept is None or not kept.held:
        return sha256_fd(fd) == item.sha256
    try:
        return kept.same_on_disk(fd)
    finally:
        kept.release()  # proved or not, the bytes are not needed again


def _stage_direct(
    src: BinaryIO,
    tmp: Path,
    fd: int,
    dest_rel: Path,
    progress: Callable[[int], None],
    cancel: threading.Event,
    window: int,
) -> Staged:
    """Stage a large clip through O_DIRECT (agent/evidence/direct.py), in windows of `window`."""
    copy = DirectCopy(fd, window)
    try:
        sha, size = copy.copy(src, progress, cancel)
    except BaseException:
        try:
            copy.close()
        finally:
            tmp.unlink(missing_ok=True)
        raise
    return Staged(tmp, dest_rel, sha, size, copy)


def _create(tmp: Path) -> int:
    """Create a temp file for a copy (never an existing one): its descriptor."""
    return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o440)


def _ignore(_size: int) -> None:
    """No re-reading while a small file is staged (prove() re-reads it whole)."""
