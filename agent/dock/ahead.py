"""The next batch's clips opened while this one is copied, in a helper thread.

Opening a clip on a recorder volume walks its directories one component at a time (no links,
nothing outside the volume); asking the recorder's disk to start reading a file costs a
system call that allocates its pages; creating the temp file waits for the journal while
the batch before is synced. For 2,000 photos that was a third of the bay thread's time
(issue 14). Done one batch ahead, the bay thread only copies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from firmware_interface.base import ClipEntry


@dataclass
class Ahead:
    """A small clip made ready a batch ahead: its recorder file open, maybe its temp file made."""

    src: BinaryIO
    temp: tuple[Path, int] | None = None  # EvidenceStore.new_temp(): (path, descriptor)

    def take_temp(self) -> tuple[Path, int] | None:
        """The temp file, handed over to its new owner (who closes or removes it)."""
        temp, self.temp = self.temp, None
        return temp

    def close(self) -> None:
        """Close what was not used; an unused temp file is removed."""
        self.src.close()
        temp = self.take_temp()
        if temp is not None:
            path, fd = temp
            os.close(fd)
            path.unlink(missing_ok=True)


Opened = dict[str, Ahead]


@contextmanager
def opened_ahead(
    name: str, groups: list[list[ClipEntry]], open_group: Callable[[list[ClipEntry]], Opened]
) -> Iterator[Iterator[tuple[list[ClipEntry], Opened]]]:
    """Each group with its files opened, the next group's being opened meanwhile.

    The consumer owns (and closes) the files of each group it is given; files opened for a
    group it never took are closed here when the block ends.
    """
    with ThreadPoolExecutor(1, thread_name_prefix=f"{name}-open") as pool:
        pending: list[Future[Opened]] = []

        def each() -> Iterator[tuple[list[ClipEntry], Opened]]:
            if groups:
                pending.append(pool.submit(open_group, groups[0]))
            for n, group in enumerate(groups):
                opened = pending.pop().result()
                if n + 1 < len(groups):
                    pending.append(pool.submit(open_group, groups[n + 1]))
                yield group, opened

        try:
            yield each()
        finally:
            for future in pending:
                for ahead in future.result().values():
                    ahead.close()
