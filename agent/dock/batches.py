"""How a docking's clips are grouped for offload: large clips alone, small ones in batches."""

from __future__ import annotations

import resource
from collections.abc import Iterator

from agent.evidence.store import SMALL
from firmware_interface.base import ClipEntry

# A batch of small files shares its syncs: the files (one syncfs, or an fsync each where the
# file system does not honour syncfs), the directories (once each), custody (one), index (one).
BATCH_FILES = 32
# After two batches of BATCH_FILES the batches double up to this many files: a docking of
# 2,000 photos syncs 19 times, not 63, while the first batches (the proof the pipeline is
# waiting for) stay short. Each batch's sources are open at once: four bays hold 4 x 128.
MAX_BATCH_FILES = 128
BATCH_BYTES = 64 * 1024 * 1024
# The docking's last batch is split so that its last TAIL_FILES go alone: what is left after
# the recorder's last byte is their sync and read-back, not a whole batch's.
TAIL_FILES = 8
# Before them the last TAPER_FILES * 4 small files go in batches of TAPER_FILES: a batch is
# proved in about half the time it takes to copy, so each small batch's proof is done by the
# time the next is copied, where the proof of a last batch of 128 (40-50 ms) was still
# running when the last files were copied. 2,000 photos: the time from their last byte to
# the bay done went from 54 to 18 ms.
TAPER_FILES = 32


# Descriptors a batch's small file holds at the peak of a bay's pipeline (its recorder file
# and temp file, the next batch opened ahead, the batch before being proved): measured 2,205
# open for four bays of 600 photos at 128 a batch, 4.3 a file.
FDS_PER_FILE = 5
# Descriptors kept for everything else: sockets, logs, the index, custody, status, analysis.
FD_RESERVE = 256


def files_per_batch(open_files: int, bays: int) -> int:
    """The most small files a bay's batch may hold so that every bay offloading at once stays
    within `open_files` descriptors (RLIMIT_NOFILE; systemd's soft default is 1,024)."""
    room = max(0, open_files - FD_RESERVE) // (max(1, bays) * FDS_PER_FILE)
    return max(1, min(MAX_BATCH_FILES, room))


def open_files_limit() -> int:
    """This process's soft limit on open descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def batch_sizes(first: int = BATCH_FILES, most: int = MAX_BATCH_FILES) -> Iterator[int]:
    """Files per batch, batch after batch: two of `first`, then doubling up to `most`."""
    yield first
    size = first
    while True:
        yield size
        size = min(size * 2, max(most, first))


def batches(
    clips: list[ClipEntry],
    files: int = BATCH_FILES,
    size: int = BATCH_BYTES,
    most: int = MAX_BATCH_FILES,
) -> Iterator[list[ClipEntry]]:
    """Clips in order: each large one alone, runs of small ones in batches of at most `most`
    files (files_per_batch) and `size` bytes; when small ones come last, the last of them in
    batches of TAPER_FILES and TAIL_FILES (tapered)."""
    limits = batch_sizes(min(files, most), most)
    limit = next(limits)
    groups: list[list[ClipEntry]] = []
    batch: list[ClipEntry] = []
    for clip in clips:
        if (
            clip.size >= SMALL
            or len(batch) >= limit
            or sum(c.size for c in batch) + clip.size > size
        ):
            if batch:
                groups.append(batch)
                limit = next(limits)
            batch = []
        if clip.size >= SMALL:
            groups.append([clip])
        else:
            batch.append(clip)
    if batch:
        groups.append(batch)
    return iter(tapered(groups, min(TAPER_FILES, most), size))


def tapered(
    groups: list[list[ClipEntry]], files: int = TAPER_FILES, size: int = BATCH_BYTES
) -> list[list[ClipEntry]]:
    """`groups` whose last `4 * files + TAIL_FILES` files, when small, are split again: in
    batches of at most `files` files and `size` bytes, then the last TAIL_FILES alone."""
    span = 4 * files + TAIL_FILES
    tail: list[ClipEntry] = []
    while groups and groups[-1][0].size < SMALL and len(tail) < span:
        tail = groups.pop() + tail
    if len(tail) > span:
        groups.append(tail[: len(tail) - span])
        tail = tail[len(tail) - span :]
    last = tail[-TAIL_FILES:]
    batch: list[ClipEntry] = []
    for clip in tail[: len(tail) - len(last)]:
        if len(batch) >= files or sum(c.size for c in batch) + clip.size > size:
            groups.append(batch)
            batch = []
        batch.append(clip)
    groups.extend(group for group in (batch, last) if group)
    return groups


def copy_order(clips: list[ClipEntry]) -> list[ClipEntry]:
    """The small clips first, then the large ones, each kind oldest first.

    A recorder reads at USB 2.0 speed, so a bay is done when its last byte is read plus the
    work that follows it. A large clip's copy is proved window by window as it is read: after
    its last byte only its last window is left to sync and read back. A batch of small files
    is staged only once the copy before it has returned, then synced and read back whole: as
    the last group it added its whole staging and proof after the recorder's last byte (a
    third of a second a bay with eight bays on two cores; SPEC 10's recorder-speed row).
    """
    return [c for c in clips if c.size < SMALL] + [c for c in clips if c.size >= SMALL]
