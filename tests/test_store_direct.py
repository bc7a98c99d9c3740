"""Large copies through O_DIRECT (agent/evidence/direct.py): bit for bit from real files of
every alignment, a window the disk gives back wrong, a cancel, a full disk, a pulled source."""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from agent.evidence import direct
from agent.evidence.store import (
    CopyCancelled,
    DiskFull,
    EvidenceStore,
    SourceReadError,
    VerifyFailed,
)
from tests.loopdev import loop_skip_reason

MiB = 2**20
DEST = Path("ZFY1", "2026-11-25", "clip.MP4")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_progress(_n: int) -> None:
    """Progress is not looked at here."""


@pytest.fixture
def store(tmp_path: Path) -> EvidenceStore:
    s = EvidenceStore(tmp_path / "data", reserve_bytes=0, window_bytes=MiB)  # several per clip
    if not s.direct_io:
        pytest.skip(f"{tmp_path} is not on a disk file system: large copies are not direct there")
    return s


def recorder_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "rec" / f"clip{size}.MP4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("size", [3 * MiB, 3 * MiB + 1, MiB - 512, 4096 + 17, 1, 0])
def test_a_real_file_of_any_size_is_copied_bit_for_bit(
    store: EvidenceStore, tmp_path: Path, size: int
) -> None:
    path, data = recorder_file(tmp_path, size)
    with open(path, "rb") as src:
        copy = store.acquire(src, DEST, "bay1", no_progress, threading.Event())
    assert copy.path.read_bytes() == data
    assert copy.sha256 == sha(data) and copy.size == size
    assert list(store.incoming.iterdir()) == []


def test_the_recorder_file_is_read_with_o_direct_and_streams_are_not(tmp_path: Path) -> None:
    path, data = recorder_file(tmp_path, 8192 + 100)
    with open(path, "rb") as src:
        source = direct.open_source(src)
        if source is None:
            pytest.skip(f"{tmp_path}'s file system refuses O_DIRECT")
        try:
            assert os.fstat(source.fd).st_ino == os.fstat(src.fileno()).st_ino
            flags = int(Path(f"/proc/self/fdinfo/{source.fd}").read_text().split()[3], 8)
            assert flags & os.O_DIRECT
            buf = mmap.mmap(-1, 16384)
            assert source.read(memoryview(buf), 0) == len(data)  # short at the end of the file
            assert buf[: len(data)] == data
        finally:
            source.close()
        src.read(1)
        assert direct.open_source(src) is None, "a file already read from is read as it is"
    assert direct.open_source(io.BytesIO(b"x" * 8192)) is None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pipe:
        os.close(w)
        assert direct.open_source(pipe) is None


class GatedSource(io.RawIOBase):
    """A recorder stream that stops after `first` bytes until the test lets it go on."""

    def __init__(self, data: bytes, first: int) -> None:
        self.data, self.first, self.pos = data, first, 0
        self.go = threading.Event()
        self.waiting = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.pos >= self.first:
            self.waiting.set()
            assert self.go.wait(10)
        n = min(len(buf), len(self.data) - self.pos, max(self.first - self.pos, 0) or len(buf))
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_a_window_the_disk_gives_back_wrong_fails_the_copy_and_nothing_is_placed(
    store: EvidenceStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that stores one byte of the second window wrong: its read-back finds it."""
    real = direct._pwrite

    def bad_disk(fd: int, data: memoryview, offset: int) -> int:
        if offset == MiB:
            wrong = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT wants
            wrong[:] = data
            wrong[1000] ^= 0xFF
            return real(fd, wrong, offset)
        return real(fd, data, offset)

    monkeypatch.setattr(direct, "_pwrite", bad_disk)
    path, _ = recorder_file(tmp_path, 3 * MiB + 100)
    with open(path, "rb") as src, pytest.raises(VerifyFailed, match="bytes 1048576-2097152"):
        store.acquire(src, DEST, "bay1", no_progress, threading.Event())
    assert not (store.root / "ZFY1").exists()
    assert list(store.incoming.iterdir()) == []


def test_a_cancelled_copy_leaves_nothing_and_no_thread(store: EvidenceStore) -> None:
    src = GatedSource(os.urandom(4 * MiB), 2 * MiB)
    cancel = threading.Event()
    before = threading.active_count()

    def cancel_when_paused() -> None:
        assert src.waiting.wait(10)
        cancel.set()
        src.go.set()

    threading.Thread(target=cancel_when_paused).start()
    with pytest.raises(CopyCancelled):
        store.stage(cast(BinaryIO, src), DEST, "bay1", no_progress, cancel, large=True)
    assert list(store.incoming.iterdir()) == []
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


class FailingSource(io.RawIOBase):
    """A recorder whose cable is pulled after `good` bytes (EIO, as a vanished USB volume)."""

    def __init__(self, good: int) -> None:
        self.good, self.pos = good, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.pos >= self.good:
            raise OSError(5, "Input/output error")
        n = min(len(buf), self.good - self.pos)
        buf[:n] = os.urandom(n)
        self.pos += n
        return n


def test_a_recorder_failing_mid_copy_is_a_source_error_and_leaves_nothing(
    store: EvidenceStore,
) -> None:
    with pytest.raises(SourceReadError, match="Input/output error"):
        store.stage(
            cast(BinaryIO, FailingSource(2 * MiB + 5)),
            DEST,
            "bay1",
            no_progress,
            threading.Event(),
            True,
        )
    assert list(store.incoming.iterdir()) == []


@pytest.mark.skipif(loop_skip_reason() is not None, reason=str(loop_skip_reason()))
def test_a_full_disk_is_disk_full_and_leaves_nothing(tmp_path: Path) -> None:
    image, mnt = tmp_path / "small.img", tmp_path / "small"
    subprocess.run(["truncate", "-s", "24M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        s = EvidenceStore(mnt / "data", reserve_bytes=0)
        assert s.direct_io, "an ext4 store copies large clips directly"
        path, _ = recorder_file(tmp_path, 40 * MiB)
        with open(path, "rb") as src, pytest.raises(DiskFull):
            s.acquire(src, DEST, "bay1", no_progress, threading.Event())
        assert list(s.incoming.iterdir()) == []
        assert not (s.root / "ZFY1").exists()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
