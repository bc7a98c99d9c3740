"""The store's proof per batch: one syncfs where it is trusted, an fsync per file elsewhere,
every byte read back from disk; large copies proved behind the next copy."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest

from agent.dock.batches import batches
from agent.evidence import diskio, store
from agent.evidence.store import EvidenceStore, VerifyFailed
from firmware_interface.base import ClipEntry
from tests.fakes import flip_byte

MiB = 2**20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_progress(_n: int) -> None:
    """Progress is not looked at here."""


def stage_all(s: EvidenceStore, blobs: list[bytes], large: bool = False) -> list[store.Staged]:
    return [
        s.stage(
            io.BytesIO(blob),
            Path("ZFY1", "2026-11-25", f"p{n}.JPG"),
            "bay1",
            no_progress,
            threading.Event(),
            large=large,
        )
        for n, blob in enumerate(blobs)
    ]


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the store's syncfs calls and file fsyncs (still doing them)."""
    calls = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = store.syncfs, store.fsync

    def syncfs(path: Path) -> None:
        calls["syncfs"] += 1
        real_syncfs(path)

    def fsync(fd: int, *args: object) -> None:
        calls["fsync"] += 1
        real_fsync(fd, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "syncfs", syncfs)
    monkeypatch.setattr(store, "fsync", fsync)
    return calls


def test_a_batch_on_a_trusted_file_system_is_made_durable_by_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not diskio.syncfs_trusted(tmp_path):
        pytest.skip(f"{tmp_path} is not on ext4/xfs/btrfs/f2fs: syncfs is not trusted there")
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    blobs = [os.urandom(30_000 + n) for n in range(32)]
    calls = counting(monkeypatch)
    copies = s.commit(stage_all(s, blobs))
    assert calls == {"syncfs": 1, "fsync": 0}
    assert [c.path.read_bytes() for c in copies] == blobs
    assert [c.sha256 for c in copies] == [sha(b) for b in blobs]


def test_elsewhere_every_file_gets_its_own_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0, trust_syncfs=False)  # as on FUSE, NFS
    assert not s.batch_syncfs
    blobs = [os.urandom(20_000) for _ in range(5)]
    calls = counting(monkeypatch)
    copies = s.commit(stage_all(s, blobs))
    assert calls == {"syncfs": 0, "fsync": 5}
    assert [c.path.read_bytes() for c in copies] == blobs


def test_fuse_and_tmpfs_are_not_trusted_with_syncfs() -> None:
    assert diskio.fs_type("/proc") == 0x9FA0  # statfs really read: procfs's magic
    assert not diskio.syncfs_trusted("/proc")
    if Path("/dev/shm").is_dir():
        assert not diskio.syncfs_trusted("/dev/shm")


@pytest.fixture(params=["direct", "buffered"])
def large_path(request: pytest.FixtureRequest) -> str:
    """Each large-copy test runs on both paths: O_DIRECT, and through the page cache."""
    return str(request.param)


def new_store(root: Path, path: str, window: int) -> EvidenceStore:
    """A store whose large copies take `path`, read back in windows of `window`; the direct
    one only where O_DIRECT is offered."""
    s = EvidenceStore(root, reserve_bytes=0, window_bytes=window)
    if path == "buffered":
        s.direct_io = False
    elif not s.direct_io:
        pytest.skip(f"{root} is not on a disk file system: large copies are not direct there")
    return s


def disk_reads() -> int:
    """Bytes this thread has had read from the block device (task I/O accounting)."""
    for line in Path("/proc/thread-self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no read_bytes in /proc/thread-self/io")


@pytest.mark.parametrize("large", ["small", "direct", "buffered"])
def test_the_read_back_really_comes_from_the_disk(tmp_path: Path, large: str) -> None:
    """Every byte is proved as the disk gives it back: the cache is dropped after the sync."""
    if not diskio.syncfs_trusted(tmp_path):
        pytest.skip(f"{tmp_path} is not on ext4/xfs/btrfs/f2fs: no disk reads to count")
    if not Path("/proc/thread-self/io").exists():
        pytest.skip("this kernel has no task I/O accounting (/proc/thread-self/io)")
    large_window = 64 * MiB  # the large copy's proof reads it all
    s = new_store(tmp_path / "data", "direct" if large == "small" else large, large_window)
    big = large != "small"
    blobs = [os.urandom(2 * MiB)] if big else [os.urandom(100_000) for _ in range(20)]
    staged = stage_all(s, blobs, large=big)
    before = disk_reads()
    s.prove(staged)
    read = disk_reads() - before
    s.discard(staged)
    assert read >= sum(len(b) for b in blobs), f"only {read} bytes came from the disk"


def test_a_large_copy_is_read_back_window_by_window_and_its_tail_after_the_fsync(
    tmp_path: Path, large_path: str
) -> None:
    s = new_store(tmp_path / "data", large_path, MiB)
    blob = os.urandom(3 * MiB + 12_345)
    (staged,) = stage_all(s, [blob], large=True)
    assert staged.reread is not None
    deadline = time.monotonic() + 10
    while staged.reread.done < 3 * MiB and time.monotonic() < deadline:
        time.sleep(0.01)
    assert staged.reread.done == 3 * MiB, "the full windows are read back before the proof"
    (copy,) = s.commit([staged])
    assert copy.path.read_bytes() == blob and copy.sha256 == sha(blob)
    assert list(s.incoming.iterdir()) == []


def test_a_large_copy_whose_tail_reads_back_wrong_is_never_placed(
    tmp_path: Path, large_path: str
) -> None:
    s = new_store(tmp_path / "data", large_path, MiB)
    (staged,) = stage_all(s, [os.urandom(2 * MiB + 999)], large=True)
    flip_byte(staged.tmp, 2 * MiB + 10)
    with pytest.raises(VerifyFailed):
        s.commit([staged])
    assert not (s.root / "ZFY1").exists()
    assert list(s.incoming.iterdir()) == []


def clip(n: int, size: int) -> ClipEntry:
    return ClipEntry(f"DCIM/{n:05d}.JPG", size, float(n), "photo")


def test_batches_are_32_twice_then_grow_to_128_and_large_clips_go_alone() -> None:
    clips = [clip(n, 200_000) for n in range(1000)]
    sizes = [len(b) for b in batches(clips)]
    assert sizes[:5] == [32, 32, 64, 128, 128]
    assert sum(sizes) == 1000 and max(sizes) == 128
    big = [clip(0, 100), clip(1, 9 * MiB), clip(2, 100)]
    assert [[c.path for c in b] for b in batches(big)] == [
        ["DCIM/00000.JPG"],
        ["DCIM/00001.JPG"],
        ["DCIM/00002.JPG"],
    ]
    assert all(
        sum(c.size for c in b) <= 64 * MiB for b in batches([clip(n, 7 * MiB) for n in range(40)])
    )
