"""Small copies hashed once: the read-back from disk is compared with the bytes that were hashed."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from agent.evidence import diskio, kept
from agent.evidence.diskio import CopyCancelled
from agent.evidence.store import EvidenceStore, Staged, VerifyFailed

MiB = 2**20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_progress(_n: int) -> None:
    """Progress is not looked at here."""


def stage(s: EvidenceStore, blob: bytes, n: int, expect: int | None) -> Staged:
    return s.stage(
        io.BytesIO(blob),
        Path("ZFY1", "2026-11-25", f"p{n}.JPG"),
        "bay1",
        no_progress,
        threading.Event(),
        expect=expect,
    )


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> kept._Pool:
    """A budget of this test's own (other tests' copies never share it)."""
    own = kept._Pool(kept.BUDGET)
    monkeypatch.setattr(kept, "budget", own)
    return own


def commit_refused_after_spoiling(
    s: EvidenceStore, staged: list[Staged], blob: bytes, where: int
) -> None:
    """The disk returns other bytes than were written for the second copy: the commit is
    refused and nothing of the batch is placed or left behind."""
    with open(staged[1].tmp, "r+b") as fh:
        fh.seek(where)
        fh.write(bytes([blob[where] ^ 1]))
    with pytest.raises(VerifyFailed, match="does not match"):
        s.commit(staged)
    assert not (s.root / "ZFY1").exists()
    assert list(s.incoming.iterdir()) == []


def test_photos_hashed_once_are_stored_right_and_their_memory_given_back(
    tmp_path: Path, budget: kept._Pool
) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(200_000) for _ in range(20)]
    staged = [stage(s, blob, n, len(blob)) for n, blob in enumerate(blobs)]
    assert all(item.kept is not None for item in staged), "every photo kept its bytes"
    assert budget.in_use == len(blobs) and budget.held <= kept.BUDGET
    copies = s.commit(staged)
    assert [c.sha256 for c in copies] == [sha(b) for b in blobs]
    assert [c.path.read_bytes() for c in copies] == blobs
    assert (budget.in_use, budget.held) == (0, 0), "all the memory given back"


def test_the_kept_comparison_reads_the_copy_back_from_the_disk(
    tmp_path: Path, budget: kept._Pool
) -> None:
    if not diskio.syncfs_trusted(tmp_path):
        pytest.skip(f"{tmp_path} is not on ext4/xfs/btrfs/f2fs: no disk reads to count")
    if not Path("/proc/thread-self/io").exists():
        pytest.skip("this kernel has no task I/O accounting (/proc/thread-self/io)")
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(100_000) for _ in range(20)]
    staged = [stage(s, blob, n, len(blob)) for n, blob in enumerate(blobs)]

    def disk_reads() -> int:
        for line in Path("/proc/thread-self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
        raise AssertionError("no read_bytes")

    before = disk_reads()
    s.prove(staged)
    read = disk_reads() - before
    s.discard(staged)
    assert read >= sum(len(b) for b in blobs), f"only {read} bytes came from the disk"


@pytest.mark.parametrize("where", [0, 99_999, 150_000])
def test_a_disk_giving_back_one_other_byte_fails_the_batch_and_places_nothing(
    tmp_path: Path, budget: kept._Pool, where: int
) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(150_001) for _ in range(3)]
    staged = [stage(s, blob, n, len(blob)) for n, blob in enumerate(blobs)]
    commit_refused_after_spoiling(s, staged, blobs[1], where)
    assert (budget.in_use, budget.held) == (0, 0)


def test_a_copy_grown_on_disk_after_its_write_fails(tmp_path: Path, budget: kept._Pool) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blob = os.urandom(50_000)
    staged = [stage(s, blob, 0, len(blob))]
    with open(staged[0].tmp, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VerifyFailed):
        s.commit(staged)
    assert (budget.in_use, budget.held) == (0, 0)


@pytest.mark.parametrize("expect", [10_000, 60_000, 1])
def test_a_source_not_of_its_listed_size_is_copied_whole_and_hashed_twice(
    tmp_path: Path, budget: kept._Pool, expect: int
) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blob = os.urandom(50_000)  # grown, or shrunk, since the recorder listed it
    item = stage(s, blob, 0, expect)
    assert item.kept is None and item.size == len(blob) and item.sha256 == sha(blob)
    assert (budget.in_use, budget.held) == (0, 0)
    [copy] = s.commit([item])
    assert copy.path.read_bytes() == blob


def test_past_the_budget_photos_are_hashed_again_and_the_budget_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = kept._Pool(MiB)
    monkeypatch.setattr(kept, "budget", own)
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(300_000) for _ in range(5)]
    staged = [stage(s, blob, n, len(blob)) for n, blob in enumerate(blobs)]
    assert [item.kept is not None for item in staged] == [True] * 3 + [False] * 2
    copies = s.commit(staged)
    assert [c.sha256 for c in copies] == [sha(b) for b in blobs]
    assert (own.in_use, own.held) == (0, 0)


def test_a_cancelled_copy_gives_its_memory_back(tmp_path: Path, budget: kept._Pool) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CopyCancelled):
        s.stage(io.BytesIO(b"x" * 1000), Path("a/b.JPG"), "bay1", no_progress, cancel, expect=1000)
    assert (budget.in_use, budget.held) == (0, 0)
    assert list(s.incoming.iterdir()) == []


def test_a_buffer_given_back_serves_the_next_photo(tmp_path: Path, budget: kept._Pool) -> None:
    """While a docking goes on, buffers are reused (no fresh memory per photo), never mixed."""
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    first = stage(s, os.urandom(100_000), 0, 100_000)  # held: the docking goes on
    blobs = [os.urandom(n) for n in (100_000, 90_000, 110_000)]  # all fit a 100 KB's buffer
    for n, blob in enumerate(blobs, start=1):
        [copy] = s.commit([stage(s, blob, n, len(blob))])
        assert copy.path.read_bytes() == blob
    grains = -(-100_000 // kept.GRAIN)
    assert budget.held == 2 * grains * kept.GRAIN, "one buffer for the held photo, one reused"
    s.commit([first])
    assert (budget.in_use, budget.held) == (0, 0)


def test_a_small_clip_over_2_mib_is_hashed_again(tmp_path: Path, budget: kept._Pool) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blob = os.urandom(kept.LARGEST + 1)
    item = stage(s, blob, 0, len(blob))
    assert item.kept is None and budget.held == 0
    [copy] = s.commit([item])
    assert copy.sha256 == sha(blob)


@pytest.mark.parametrize("where", [0, 1_400_000])
def test_a_copy_hashed_again_on_read_back_finds_one_other_byte(
    tmp_path: Path, budget: kept._Pool, where: int
) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(1_500_000) for _ in range(2)]  # more than one read-back chunk each
    staged = [stage(s, blob, n, None) for n, blob in enumerate(blobs)]  # none kept
    assert [item.kept for item in staged] == [None, None]
    commit_refused_after_spoiling(s, staged, blobs[1], where)
