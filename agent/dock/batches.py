"""How a docking's clips are grouped for offload: large clips alone, small ones in batches."""

from __future__ import annotations

from collections.abc import Iterator

from agent.evidence.store import SMALL
from firmware_interface.base import ClipEntry

# A batch of small files shares its fsyncs: custody (one), index (one), directories (once each).
BATCH_FILES = 32
BATCH_BYTES = 64 * 1024 * 1024


def batches(
    clips: list[ClipEntry], files: int = BATCH_FILES, size: int = BATCH_BYTES
) -> Iterator[list[ClipEntry]]:
    """Clips in order: each large one alone, runs of small ones in bounded batches."""
    batch: list[ClipEntry] = []
    for clip in clips:
        if (
            clip.size >= SMALL
            or len(batch) >= files
            or sum(c.size for c in batch) + clip.size > size
        ):
            if batch:
                yield batch
            batch = []
        if clip.size >= SMALL:
            yield [clip]
        else:
            batch.append(clip)
    if batch:
        yield batch
