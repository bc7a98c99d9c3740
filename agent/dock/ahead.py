"""The next batch's clips opened while this one is copied, in a helper thread.

Opening a clip on a recorder volume walks its directories one component at a time (no links,
nothing outside the volume), and asking the recorder's disk to start reading a file costs a
system call that allocates its pages: for 2,000 photos, a fifth of the bay thread's time
(issue 14). Done one batch ahead, the bay thread only copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import BinaryIO

from firmware_interface.base import ClipEntry

Opened = dict[str, BinaryIO]


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
                for src in future.result().values():
                    src.close()
