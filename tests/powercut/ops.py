"""The FUSE operations: a passthrough to the backing tree that tells the ledger what each change undoes."""

from __future__ import annotations

import errno
import functools
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mfusepy

from tests.powercut.ledger import Ledger, lookup
from tests.powercut.restore import CutReport, restore

F = TypeVar("F", bound=Callable[..., Any])

_STAT_KEYS = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_blksize",
    "st_rdev",
)
# The backing fd never appends or truncates by itself: the kernel hands every write its offset
# (the file size for O_APPEND) and an O_TRUNC is applied here, after the ledger saw it.
_OPEN_DROP = os.O_APPEND | os.O_TRUNC | os.O_CREAT | os.O_EXCL | getattr(os, "O_DIRECT", 0)


def _op(fn: F) -> F:
    """Serialise an operation with a cut, and fail it once the power is off."""

    @functools.wraps(fn)
    def wrapper(self: PowerCutOps, *args: Any) -> Any:
        with self.mutex:
            if self.dead:
                raise mfusepy.FuseOSError(errno.EIO)
            return fn(self, *args)

    return wrapper  # type: ignore[return-value]


class PowerCutOps(mfusepy.Operations):
    """Passthrough over `root`; fsync/fdatasync make a file's data durable, fsyncdir a directory's names."""

    use_ns = True

    def __init__(
        self, root: Path, state_dir: Path, on_ready: Callable[[], None], journal: bool = False
    ) -> None:
        self.root = str(root)
        self.journal = journal
        self.ledger = Ledger(state_dir)
        self.mutex = threading.Lock()
        self.dead = False
        self.fh_ino: dict[int, int] = {}
        self._on_ready = on_ready

    # helpers
    def _b(self, path: str) -> str:
        return self.root + path if path != "/" else self.root

    def _touch(self, path: str) -> None:
        """Tell the ledger the entry at `path` is about to change."""
        head, _, name = path.rpartition("/")
        parent = self._b(head or "/")
        self.ledger.before_entry_change(os.lstat(parent).st_ino, parent, name)

    def _own(self, bpath: str) -> None:
        """Give a new entry to the caller, as the kernel would (the server runs as root)."""
        uid, gid, _pid = mfusepy.fuse_get_context()
        if uid != os.getuid() or gid != os.getgid():
            os.lchown(bpath, uid, gid)

    def _remove_target(self, bpath: str) -> None:
        """Before the live name at `bpath` goes: keep its inode if a durable name still needs it."""
        st = os.lstat(bpath)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink == 1:
            if self.ledger.durably_named(st.st_ino):
                self.ledger.pin_file(bpath, st.st_ino)
            else:
                self.ledger.forget(st.st_ino)

    # the power
    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        if config_3 is not None:
            config_3.use_ino = 1
            config_3.hard_remove = 1  # no .fuse_hidden files in the backing tree
            config_3.nullpath_ok = 1  # open-but-unlinked files work through their handle
        self._on_ready()

    def cut(self) -> CutReport:
        """Power off: every later operation fails, the backing tree keeps only what was durable."""
        with self.mutex:
            self.dead = True
            for fh in list(self.fh_ino):
                os.close(fh)
            self.fh_ino.clear()
            return restore(self.root, self.ledger)

    def sync_all(self) -> None:
        """sync(2): everything live is durable."""
        with self.mutex:
            self.ledger.everything_durable()

    # attributes
    @_op
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        st = os.fstat(fh) if fh is not None else os.lstat(self._b(path or "/"))
        attrs = {k: getattr(st, k) for k in _STAT_KEYS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        if st.st_ino in self.ledger.pinned:
            attrs["st_nlink"] -= 1  # the graveyard's link is not the caller's
        return attrs

    @_op
    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        os.chmod(fh if fh is not None else self._b(path or "/"), mode)
        return 0

    @_op
    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if fh is not None:
            os.fchown(fh, uid, gid)
        else:
            os.lchown(self._b(path or "/"), uid, gid)
        return 0

    @_op
    def utimens(self, path: str | None, times: Any = None, fh: int | None = None) -> int:
        os.utime(fh if fh is not None else self._b(path or "/"), ns=times)
        return 0

    @_op
    def readlink(self, path: str) -> str:
        return os.readlink(self._b(path))

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.root)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        return {k: getattr(sv, k) for k in (*keys, "f_flag", "f_frsize", "f_namemax")}

    # directories
    @_op
    def opendir(self, path: str) -> int:
        return os.open(self._b(path), os.O_RDONLY | os.O_DIRECTORY)

    @_op
    def readdir(self, path: str | None, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # With use_ino a name needs its inode number: a zero d_ino reads as a deleted entry.
        with os.scandir(fh) as it:
            names = [(e.name, e.inode(), e.stat(follow_symlinks=False).st_mode) for e in it]
        here = os.fstat(fh)
        out = [(".", {"st_ino": here.st_ino, "st_mode": here.st_mode}, 0)]
        out.append(("..", {"st_mode": stat.S_IFDIR}, 0))
        out += [(n, {"st_ino": ino, "st_mode": mode}, 0) for n, ino, mode in names]
        return out

    @_op
    def releasedir(self, path: str | None, fh: int) -> int:
        os.close(fh)
        return 0

    @_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self._commit_names()
        self.ledger.entries_durable(os.fstat(fh).st_ino)
        return 0

    def _commit_names(self) -> None:
        """With a journal (ext4), any fsync commits every name change made before it."""
        if self.journal:
            for ino in list(self.ledger.dirs):
                self.ledger.entries_durable(ino)

    @_op
    def mkdir(self, path: str, mode: int) -> int:
        self._touch(path)
        os.mkdir(self._b(path), mode)
        self.ledger.born_dir(os.lstat(self._b(path)).st_ino)
        self._own(self._b(path))
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        self._touch(path)
        bpath = self._b(path)
        ino = os.lstat(bpath).st_ino
        if os.listdir(bpath):
            raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        if self.ledger.durably_named(ino):
            self.ledger.bury_dir(bpath, ino)
        else:
            os.rmdir(bpath)
            self.ledger.forget(ino)
        return 0

    # names
    @_op
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self._touch(path)
        os.mknod(self._b(path), mode, dev)
        self.ledger.born_file(os.lstat(self._b(path)).st_ino)
        self._own(self._b(path))
        return 0

    @_op
    def symlink(self, target: str, source: str) -> int:
        self._touch(target)
        os.symlink(source, self._b(target))
        self.ledger.born_file(os.lstat(self._b(target)).st_ino)
        self._own(self._b(target))
        return 0

    @_op
    def link(self, target: str, source: str) -> int:
        self._touch(target)
        os.link(self._b(source), self._b(target), follow_symlinks=False)
        return 0

    @_op
    def unlink(self, path: str) -> int:
        self._touch(path)
        self._remove_target(self._b(path))
        os.unlink(self._b(path))
        return 0

    @_op
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            raise mfusepy.FuseOSError(errno.EINVAL)  # RENAME_NOREPLACE/EXCHANGE: not modelled
        bold, bnew = self._b(old), self._b(new)
        src, dst = os.lstat(bold), lookup(bnew)
        if dst is not None and dst.ino == src.st_ino:
            return 0  # two names of one file: rename(2) does nothing
        self._touch(old)
        self._touch(new)
        buried = False
        if dst is not None and dst.is_dir:
            if not stat.S_ISDIR(src.st_mode):
                raise mfusepy.FuseOSError(errno.EISDIR)
            if os.listdir(bnew):
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            if (new + "/").startswith(old + "/"):
                raise mfusepy.FuseOSError(errno.EINVAL)
            if self.ledger.durably_named(dst.ino):
                self.ledger.bury_dir(bnew, dst.ino)
                buried = True
        elif dst is not None:
            if stat.S_ISDIR(src.st_mode):
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            self._remove_target(bnew)
        try:
            os.rename(bold, bnew)
        except OSError:
            if buried:
                self.ledger.unbury_dir(bnew, dst.ino)  # type: ignore[union-attr]
            raise
        if dst is not None and dst.is_dir and not buried:
            self.ledger.forget(dst.ino)
        return 0

    # files
    def _opened(self, fd: int, flags: int) -> int:
        ino = os.fstat(fd).st_ino
        self.fh_ino[fd] = ino
        if flags & os.O_TRUNC:
            self.ledger.before_data_change(ino, fd, 0)
            os.ftruncate(fd, 0)
        return fd

    @_op
    def create(self, path: str, mode: int, flags: int) -> int:
        bpath = self._b(path)
        if lookup(bpath) is not None:
            if flags & os.O_EXCL:
                raise mfusepy.FuseOSError(errno.EEXIST)
            return self._opened(os.open(bpath, flags & ~_OPEN_DROP), flags)
        self._touch(path)
        fd = os.open(bpath, (flags & ~_OPEN_DROP) | os.O_CREAT | os.O_EXCL, mode)
        self.fh_ino[fd] = ino = os.fstat(fd).st_ino
        self.ledger.born_file(ino)
        self._own(bpath)
        return fd

    @_op
    def open(self, path: str, flags: int) -> int:
        return self._opened(os.open(self._b(path), flags & ~_OPEN_DROP), flags)

    @_op
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    @_op
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self.ledger.before_data_change(self.fh_ino[fh], fh, offset)
        return os.pwrite(fh, data, offset)

    @_op
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None:
            self.ledger.before_data_change(self.fh_ino[fh], fh, length)
            os.ftruncate(fh, length)
            return 0
        fd = os.open(self._b(path or "/"), os.O_WRONLY)
        try:
            self.ledger.before_data_change(os.fstat(fd).st_ino, fd, length)
            os.ftruncate(fd, length)
        finally:
            os.close(fd)
        return 0

    @_op
    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close(2) makes nothing durable

    @_op
    def release(self, path: str | None, fh: int) -> int:
        self.fh_ino.pop(fh, None)
        os.close(fh)
        return 0

    @_op
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self._commit_names()
        self.ledger.data_durable(self.fh_ino[fh])
        return 0
