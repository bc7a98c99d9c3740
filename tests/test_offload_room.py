"""The room an offload checks for each clip: a statvfs per 16 MiB staged, not per photo."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dock import offload
from agent.dock.room import RECHECK_BYTES, Room
from agent.evidence.store import EvidenceStore


class Counting(EvidenceStore):
    """The real store, counting its looks at the file system."""

    looks = 0

    def free_bytes(self) -> int:
        self.looks += 1
        return super().free_bytes()


def test_photos_are_admitted_on_one_look_per_recheck_bytes(tmp_path: Path) -> None:
    store = Counting(tmp_path / "data", reserve_bytes=0)
    room = Room(store)
    photo = 200_000
    for _ in range(2 * RECHECK_BYTES // photo):
        assert room.fits(photo)
        room.took(photo)
    assert store.looks == 2


def test_a_clip_is_refused_only_on_a_fresh_look(tmp_path: Path) -> None:
    store = Counting(tmp_path / "data", reserve_bytes=0)
    room = Room(store)
    free = store.free_bytes()
    assert room.fits(1)
    room.took(free)  # as if the offload had filled the disk: the estimate says no room
    looks = store.looks
    assert room.fits(1)  # the disk still has it: looked again rather than refused
    assert store.looks == looks + 1
    assert not room.fits(10 * free)
    assert store.looks == looks + 2


@pytest.mark.parametrize("reserve", [0, 2**20])
def test_the_reserve_stays_free(tmp_path: Path, reserve: int) -> None:
    store = EvidenceStore(tmp_path / "data", reserve_bytes=reserve)
    left = store.free_bytes() - reserve
    room = Room(store)
    assert not room.fits(left + 100 * 2**20)  # margin: the shared disk changes meanwhile
    assert offload.Room(store).fits(1)
