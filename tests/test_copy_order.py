"""The order a docking's clips are copied in: small ones first, then large ones, each oldest first."""

from __future__ import annotations

from agent.dock.batches import batches, copy_order
from agent.evidence.store import SMALL
from firmware_interface.base import ClipEntry


def clip(n: int, size: int) -> ClipEntry:
    return ClipEntry(f"DCIM/{n:05d}.MP4", size, float(n), "video")


def test_small_clips_are_copied_before_large_ones_each_kind_oldest_first() -> None:
    clips = [clip(0, SMALL), clip(1, 100), clip(2, SMALL * 3), clip(3, SMALL - 1), clip(4, 5)]
    assert [c.path for c in copy_order(clips)] == [
        "DCIM/00001.MP4",
        "DCIM/00003.MP4",
        "DCIM/00004.MP4",
        "DCIM/00000.MP4",
        "DCIM/00002.MP4",
    ]


def test_the_small_ones_share_batches_and_every_clip_is_copied_once() -> None:
    clips = [clip(n, SMALL if n % 5 == 0 else 1000) for n in range(40)]
    groups = list(batches(copy_order(clips)))
    assert [len(g) for g in groups] == [32] + [1] * 8
    assert all(c.size < SMALL for c in groups[0])
    assert sorted(c.path for g in groups for c in g) == sorted(c.path for c in clips)


def test_the_last_batch_leaves_its_last_eight_files_alone() -> None:
    """After the recorder's last byte only a few files are left to sync and read back."""
    sizes = [len(g) for g in batches([clip(n, 1000) for n in range(101)])]
    assert sizes == [32, 32, 29, 8]
    assert [len(g) for g in batches([clip(n, 1000) for n in range(8)])] == [8]
    assert [len(g) for g in batches([clip(n, 1000) for n in range(9)])] == [1, 8]
    big_last = [clip(n, 1000) for n in range(40)] + [clip(40, SMALL)]
    assert [len(g) for g in batches(big_last)] == [32, 8, 1]


def test_the_last_small_files_go_in_batches_of_32_before_the_last_eight() -> None:
    """Each of the last batches is proved while the next is copied: no batch of 128 is left
    to prove after the recorder's last byte."""
    photos = [clip(n, 1000) for n in range(2000)]
    groups = list(batches(photos))
    assert [len(g) for g in groups][-7:] == [128, 72, 32, 32, 32, 32, 8]
    assert [c.path for g in groups for c in g] == [c.path for c in photos]
    assert [len(g) for g in batches(photos[:300], most=16)][-5:] == [16, 16, 16, 16, 8]
