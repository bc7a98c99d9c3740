"""What is durable: per inode the data a power cut keeps, per directory the names it keeps."""

from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


class Entry(NamedTuple):
    """A directory entry's target: the backing inode and whether it is a directory."""

    ino: int
    is_dir: bool


def lookup(path: str) -> Entry | None:
    """The entry a backing path names now, None when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return Entry(st.st_ino, stat.S_ISDIR(st.st_mode))


@dataclass
class FileState:
    """A regular file whose data changed since it was last made durable."""

    # The durable data is the shadow copy when there is one, else the first `durable_size`
    # bytes of the live file: until a change touches those bytes (an overwrite, a truncate
    # below them) they are still the durable ones, so an append-only file never needs a copy.

    durable_size: int
    shadow: str | None = None


@dataclass
class DirState:
    """A directory whose entries changed since its last fsync."""

    # `orig` holds, for each name changed since, the entry a cut returns to (None: the name
    # did not exist durably); names not in it are unchanged. A directory made since the
    # mount has no durable entries at all (`new`).

    new: bool = False
    orig: dict[str, Entry | None] = field(default_factory=dict)


class Ledger:
    """The durable state of a mounted tree, kept as differences from the live backing tree."""

    # Inodes the live tree drops while a durable entry still names them are kept alive in
    # `graveyard` (a hard link, or the emptied directory moved there), so a cut can put them
    # back; they are released once no durable entry names them.

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.graveyard = state_dir / "graveyard"
        self.shadows = state_dir / "shadows"
        self.limbo = state_dir / "limbo"
        shutil.rmtree(state_dir, ignore_errors=True)
        for d in (self.graveyard, self.shadows):
            d.mkdir(parents=True)
        self.files: dict[int, FileState] = {}
        self.dirs: dict[int, DirState] = {}
        self.refs: Counter[int] = Counter()  # inode -> how many `orig` entries name it
        self.pinned: set[int] = set()

    # data
    def before_data_change(self, ino: int, fd: int, start: int) -> None:
        """Record the durable data of `ino` before bytes from `start` on change (write or truncate)."""
        st = self.files.get(ino)
        if st is None:
            st = self.files[ino] = FileState(os.fstat(fd).st_size)
        if st.shadow is None and start < st.durable_size:
            st.shadow = str(self.shadows / str(ino))
            with open(f"/proc/self/fd/{fd}", "rb") as src, open(st.shadow, "wb") as dst:
                remaining = st.durable_size
                while remaining > 0:
                    chunk = src.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    dst.write(chunk)
                    remaining -= len(chunk)

    def data_durable(self, ino: int) -> None:
        """fsync/fdatasync of `ino`: its live data is now its durable data."""
        st = self.files.pop(ino, None)
        if st is not None and st.shadow is not None:
            os.unlink(st.shadow)

    def born_file(self, ino: int) -> None:
        """A new non-directory inode: nothing of its data is durable yet."""
        self.forget(ino)
        self.files[ino] = FileState(0)

    def born_dir(self, ino: int) -> None:
        """A new directory: none of its entries is durable yet."""
        self.forget(ino)
        self.dirs[ino] = DirState(new=True)

    def forget(self, ino: int) -> None:
        """Drop what is known of an inode that no durable entry can name any more."""
        self.data_durable(ino)
        ds = self.dirs.pop(ino, None)
        if ds is not None:
            for e in ds.orig.values():
                if e is not None:
                    self._unref(e.ino)

    # names
    def before_entry_change(self, dir_ino: int, dir_path: str, name: str) -> None:
        """Record the durable entry of `name` in a directory before the live one changes."""
        ds = self.dirs.get(dir_ino)
        if ds is None:
            ds = self.dirs[dir_ino] = DirState()
        if ds.new or name in ds.orig:
            return
        e = lookup(os.path.join(dir_path, name))
        ds.orig[name] = e
        if e is not None:
            self.refs[e.ino] += 1

    def entries_durable(self, dir_ino: int) -> None:
        """fsync of a directory: its live entries are now its durable entries."""
        ds = self.dirs.pop(dir_ino, None)
        if ds is not None:
            for e in ds.orig.values():
                if e is not None:
                    self._unref(e.ino)

    def durably_named(self, ino: int) -> bool:
        """Whether a durable entry names `ino` that the live tree may no longer hold."""
        return self.refs.get(ino, 0) > 0

    def pin_file(self, path: str, ino: int) -> None:
        """Keep a non-directory inode alive (its last live name is going) for a cut to restore."""
        if ino not in self.pinned:
            os.link(path, self.graveyard / str(ino), follow_symlinks=False)
            self.pinned.add(ino)

    def bury_dir(self, path: str, ino: int) -> None:
        """Move an emptied directory out of the live tree instead of removing it."""
        os.rename(path, self.graveyard / f"d{ino}")
        self.pinned.add(ino)

    def unbury_dir(self, path: str, ino: int) -> None:
        """Undo bury_dir (the operation it prepared for failed)."""
        os.rename(self.graveyard / f"d{ino}", path)
        self.pinned.discard(ino)

    def _unref(self, ino: int) -> None:
        self.refs[ino] -= 1
        if self.refs[ino] > 0:
            return
        del self.refs[ino]
        if ino in self.pinned:
            # No durable entry names it any more: a cut cannot need it, let it go.
            self.pinned.discard(ino)
            buried = self.graveyard / f"d{ino}"
            if buried.is_dir():
                buried.rmdir()
            else:
                (self.graveyard / str(ino)).unlink()
            self.forget(ino)

    def durable_entries(self, dir_ino: int, live: dict[str, Entry]) -> dict[str, Entry]:
        """The entries a cut leaves in a directory whose live entries are `live`."""
        ds = self.dirs.get(dir_ino)
        if ds is None:
            return dict(live)
        if ds.new:
            return {}
        out = dict(live)
        for name, e in ds.orig.items():
            if e is None:
                out.pop(name, None)
            else:
                out[name] = e
        return out

    def everything_durable(self) -> None:
        """sync(2) of the whole tree: the live state is the durable state."""
        for ino in list(self.dirs):
            self.entries_durable(ino)
        for ino in list(self.files):
            self.data_durable(ino)
