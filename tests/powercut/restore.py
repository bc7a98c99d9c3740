"""The power cut itself: turn the backing tree into exactly the durable state the ledger describes."""

from __future__ import annotations

import os
import shutil
import stat
from collections import deque
from dataclasses import dataclass, field

from tests.powercut.ledger import Entry, Ledger


@dataclass
class CutReport:
    """What a cut threw away (counts), so a test can tell a cut that lost nothing."""

    files_reverted: int = 0  # inodes whose data went back to their last fsync
    entries_removed: int = 0  # live names a cut took away (not durable)
    entries_restored: int = 0  # durable names a cut put back
    unrecoverable: list[str] = field(
        default_factory=list
    )  # durable names whose inode was lost (a bug)


class _Tree:
    """The backing tree as open directory descriptors, so moves never invalidate a path."""

    def __init__(self) -> None:
        self.fd: dict[int, int] = {}
        self.entries: dict[int, dict[str, Entry]] = {}
        self.where: dict[int, list[tuple[int, str]]] = {}

    def add_root(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        ino = os.fstat(fd).st_ino
        self.fd[ino] = fd
        self.entries[ino] = {}
        stack = [ino]
        while stack:
            d = stack.pop()
            for name in os.listdir(self.fd[d]):
                st = os.stat(name, dir_fd=self.fd[d], follow_symlinks=False)
                e = Entry(st.st_ino, stat.S_ISDIR(st.st_mode))
                self.entries[d][name] = e
                self.where.setdefault(e.ino, []).append((d, name))
                if e.is_dir:
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                    self.fd[e.ino] = os.open(name, flags, dir_fd=self.fd[d])
                    self.entries[e.ino] = {}
                    stack.append(e.ino)
        return ino

    def move(self, src: tuple[int, str], dst: tuple[int, str]) -> None:
        os.rename(src[1], dst[1], src_dir_fd=self.fd[src[0]], dst_dir_fd=self.fd[dst[0]])
        e = self.entries[src[0]].pop(src[1])
        self.entries[dst[0]][dst[1]] = e
        locs = self.where[e.ino]
        locs[locs.index(src)] = dst

    def link(self, ino: int, dst: tuple[int, str]) -> None:
        src = self.where[ino][0]
        os.link(
            src[1],
            dst[1],
            src_dir_fd=self.fd[src[0]],
            dst_dir_fd=self.fd[dst[0]],
            follow_symlinks=False,
        )
        self.entries[dst[0]][dst[1]] = self.entries[src[0]][src[1]]
        self.where[ino].append(dst)

    def close(self) -> None:
        for fd in self.fd.values():
            os.close(fd)


def _revert_data(tree: _Tree, ledger: Ledger, report: CutReport) -> None:
    for ino, st in ledger.files.items():
        locs = tree.where.get(ino)
        if not locs:
            continue  # no name left anywhere: nothing can reach its data
        d, name = locs[0]
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW, dir_fd=tree.fd[d])
        try:
            if st.shadow is None:
                os.ftruncate(fd, st.durable_size)
            else:
                os.ftruncate(fd, 0)
                with open(st.shadow, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            os.close(fd)
        report.files_reverted += 1


def restore(root: str, ledger: Ledger) -> CutReport:
    """Leave in `root` only what was durable; everything else goes, as after a power cut."""
    report = CutReport()
    ledger.limbo.mkdir()
    tree = _Tree()
    try:
        root_ino = tree.add_root(root)
        tree.add_root(str(ledger.graveyard))
        limbo_ino = tree.add_root(str(ledger.limbo))
        _revert_data(tree, ledger, report)
        # Durable entries are computed before anything moves: a directory no change
        # touched since its fsync keeps exactly the entries it has now.
        want = {d: ledger.durable_entries(d, live) for d, live in tree.entries.items()}
        placed = {root_ino}
        queue = deque([root_ino])
        spare = 0
        while queue:
            d = queue.popleft()
            live, wanted = tree.entries[d], want[d]
            for name, e in list(live.items()):
                w = wanted.get(name)
                if w is None or w.ino != e.ino:
                    spare += 1
                    tree.move((d, name), (limbo_ino, str(spare)))
                    report.entries_removed += 1
            for name, w in wanted.items():
                if name not in live:
                    if w.is_dir:
                        if w.ino in placed:
                            continue  # moved between two synced directories: it keeps one place
                        if not tree.where.get(w.ino):
                            report.unrecoverable.append(name)
                            continue
                        tree.move(tree.where[w.ino][0], (d, name))
                    else:
                        if not tree.where.get(w.ino):
                            report.unrecoverable.append(name)
                            continue
                        tree.link(w.ino, (d, name))
                    report.entries_restored += 1
                if w.is_dir and w.ino not in placed:
                    placed.add(w.ino)
                    queue.append(w.ino)
    finally:
        tree.close()
    # What is left in limbo and the graveyard is what the cut destroyed.
    shutil.rmtree(ledger.state_dir)
    return report
