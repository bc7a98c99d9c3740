"""The power-cut layer itself: what survives a cut is exactly what fsync made durable."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powercut import PowerCutFS, fuse_unavailable

pytestmark = pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerCutFS]:
    (tmp_path / "back").mkdir()
    layer = PowerCutFS(tmp_path / "back", tmp_path / "mnt")
    with layer:
        yield layer


def mnt(fs: PowerCutFS) -> Path:
    return fs.mountpoint


def back(fs: PowerCutFS) -> Path:
    return fs.backing


def write(path: Path, data: bytes, sync: bool = True, mode: str = "wb") -> None:
    with open(path, mode) as fh:
        fh.write(data)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_file_and_its_name_fsynced_survive_a_cut(fs: PowerCutFS) -> None:
    write(mnt(fs) / "clip.mp4", b"evidence" * 1000)
    sync_dir(mnt(fs))
    report = fs.cut()
    assert (back(fs) / "clip.mp4").read_bytes() == b"evidence" * 1000
    assert report.files_reverted == 0 and report.entries_removed == 0
    assert not os.path.ismount(mnt(fs))


def test_data_never_fsynced_is_lost_even_when_the_name_is_durable(fs: PowerCutFS) -> None:
    write(mnt(fs) / "named", b"not synced", sync=False)
    write(mnt(fs) / "gone", b"not synced either", sync=False)
    sync_dir(mnt(fs))
    os.unlink(mnt(fs) / "gone")  # the unlink is not durable: the empty file comes back
    write(mnt(fs) / "nameless", b"synced data, name never synced")
    fs.cut()
    assert (back(fs) / "named").read_bytes() == b""
    assert (back(fs) / "gone").read_bytes() == b""
    assert not (back(fs) / "nameless").exists()
    assert sorted(os.listdir(back(fs))) == ["gone", "named"]


def test_rename_without_a_directory_fsync_reverts(fs: PowerCutFS) -> None:
    write(mnt(fs) / "index.json", b'{"old": 1}')
    write(mnt(fs) / ".index.json.tmp", b'{"new": 2}')
    sync_dir(mnt(fs))
    os.replace(mnt(fs) / ".index.json.tmp", mnt(fs) / "index.json")
    assert (mnt(fs) / "index.json").read_bytes() == b'{"new": 2}'
    fs.cut()
    assert (back(fs) / "index.json").read_bytes() == b'{"old": 1}'
    assert (back(fs) / ".index.json.tmp").read_bytes() == b'{"new": 2}'


def test_rename_with_the_directory_fsync_survives(fs: PowerCutFS) -> None:
    write(mnt(fs) / "index.json", b'{"old": 1}')
    sync_dir(mnt(fs))
    write(mnt(fs) / ".index.json.tmp", b'{"new": 2}')
    os.replace(mnt(fs) / ".index.json.tmp", mnt(fs) / "index.json")
    sync_dir(mnt(fs))
    fs.cut()
    assert os.listdir(back(fs)) == ["index.json"]
    assert (back(fs) / "index.json").read_bytes() == b'{"new": 2}'


def test_a_rename_before_the_file_fsync_leaves_an_empty_file(fs: PowerCutFS) -> None:
    write(mnt(fs) / ".tmp", b"payload", sync=False)
    os.replace(mnt(fs) / ".tmp", mnt(fs) / "final")
    sync_dir(mnt(fs))
    fs.cut()
    assert (back(fs) / "final").read_bytes() == b""


def test_an_append_after_a_synced_prefix_loses_only_the_tail(fs: PowerCutFS) -> None:
    log = mnt(fs) / "custody.jsonl"
    write(log, b"line 1\n", mode="ab")
    sync_dir(mnt(fs))
    write(log, b"line 2\n", mode="ab")
    write(log, b"line 3\n", sync=False, mode="ab")
    write(log, b"line 4\n", sync=False, mode="ab")
    assert log.read_bytes() == b"line 1\nline 2\nline 3\nline 4\n"
    fs.cut()
    assert (back(fs) / "custody.jsonl").read_bytes() == b"line 1\nline 2\n"


def test_overwrite_and_truncate_after_fsync_go_back_to_the_synced_bytes(fs: PowerCutFS) -> None:
    write(mnt(fs) / "journal", b"A" * 5000)
    write(mnt(fs) / "short", b"0123456789")
    sync_dir(mnt(fs))
    with open(mnt(fs) / "journal", "r+b") as fh:
        fh.seek(100)
        fh.write(b"B" * 100)
        fh.truncate(1000)
    os.truncate(mnt(fs) / "short", 3)
    with open(mnt(fs) / "short", "ab") as fh:
        fh.write(b"xyz")
    assert (mnt(fs) / "short").read_bytes() == b"012xyz"
    fs.cut()
    assert (back(fs) / "journal").read_bytes() == b"A" * 5000
    assert (back(fs) / "short").read_bytes() == b"0123456789"


def test_hard_link_into_place_survives_with_the_directory_fsync(fs: PowerCutFS) -> None:
    store = mnt(fs) / "store"
    store.mkdir()
    sync_dir(mnt(fs))
    write(store / ".incoming", b"photo bytes")
    os.link(store / ".incoming", store / "photo.jpg")
    assert os.stat(store / "photo.jpg").st_ino == os.stat(store / ".incoming").st_ino
    assert os.stat(store / "photo.jpg").st_nlink == 2
    os.unlink(store / ".incoming")
    sync_dir(store)
    os.link(store / "photo.jpg", store / "unsynced-link.jpg")
    fs.cut()
    assert os.listdir(back(fs) / "store") == ["photo.jpg"]
    assert (back(fs) / "store" / "photo.jpg").read_bytes() == b"photo bytes"


def test_unlink_without_a_directory_fsync_brings_the_file_back(fs: PowerCutFS) -> None:
    write(mnt(fs) / "kept", b"synced copy")
    write(mnt(fs) / "deleted", b"really deleted")
    sync_dir(mnt(fs))
    os.unlink(mnt(fs) / "deleted")
    sync_dir(mnt(fs))
    os.unlink(mnt(fs) / "kept")
    write(mnt(fs) / "kept", b"a new file of the same name")  # not durable: the old one returns
    fs.cut()
    assert os.listdir(back(fs)) == ["kept"]
    assert (back(fs) / "kept").read_bytes() == b"synced copy"


def test_a_new_directory_needs_its_parent_fsynced(fs: PowerCutFS) -> None:
    for name in ("durable", "orphan"):
        (mnt(fs) / name).mkdir()
        write(mnt(fs) / name / "f", name.encode())
        sync_dir(mnt(fs) / name)
    sync_dir(mnt(fs))  # both names now durable ...
    os.rename(mnt(fs) / "orphan", mnt(fs) / "durable" / "moved")  # ... and this move is not
    (mnt(fs) / "lost").mkdir()
    write(mnt(fs) / "lost" / "f", b"x")
    sync_dir(mnt(fs) / "lost")
    fs.cut()
    assert sorted(os.listdir(back(fs))) == ["durable", "orphan"]
    assert (back(fs) / "orphan" / "f").read_bytes() == b"orphan"
    assert os.listdir(back(fs) / "durable") == ["f"]


def test_rmdir_and_directory_rename_revert_without_fsync(fs: PowerCutFS) -> None:
    (mnt(fs) / "a" / "b").mkdir(parents=True)
    write(mnt(fs) / "a" / "b" / "f", b"deep")
    for d in ("a/b", "a", ""):
        sync_dir(mnt(fs) / d)
    os.unlink(mnt(fs) / "a" / "b" / "f")
    os.rmdir(mnt(fs) / "a" / "b")
    os.rename(mnt(fs) / "a", mnt(fs) / "z")
    (mnt(fs) / "a").mkdir()
    assert sorted(os.listdir(mnt(fs))) == ["a", "z"]
    fs.cut()
    assert os.listdir(back(fs)) == ["a"]
    assert (back(fs) / "a" / "b" / "f").read_bytes() == b"deep"


def test_sync_makes_everything_durable(fs: PowerCutFS) -> None:
    (mnt(fs) / "d").mkdir()
    write(mnt(fs) / "d" / "f", b"prepared", sync=False)
    fs.sync()
    report = fs.cut()
    assert (back(fs) / "d" / "f").read_bytes() == b"prepared"
    assert report.files_reverted == 0 and report.entries_removed == 0


def test_a_cut_fails_the_files_still_open_and_a_remount_shows_what_survived(
    fs: PowerCutFS,
) -> None:
    fh = open(mnt(fs) / "open", "wb")  # noqa: SIM115 - it must outlive the cut
    fh.write(b"x")
    fh.flush()
    os.fsync(fh.fileno())
    sync_dir(mnt(fs))
    fs.cut()
    with pytest.raises(OSError) as exc:
        os.write(fh.fileno(), b"after the cut")
    assert exc.value.errno in (errno.EIO, errno.ENOTCONN)
    with contextlib.suppress(OSError):
        fh.close()
    fs.mount()
    assert (mnt(fs) / "open").read_bytes() == b"x"


CHILD = textwrap.dedent(
    """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    d = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY)
    os.fsync(fd); os.fsync(d)
    n = 0
    while True:
        os.write(fd, b"%08d\\n" % n)
        n += 1
        if n % 3 == 0:
            os.fsync(fd)
            print(n, flush=True)
    """
)


def test_kill_and_cut_keeps_exactly_a_synced_prefix(fs: PowerCutFS) -> None:
    target = mnt(fs) / "records"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked = [int(child.stdout.readline()) for _ in range(20)]
    report = fs.kill_and_cut(child)
    assert child.returncode == -9
    lines = (back(fs) / "records").read_bytes().splitlines()
    assert lines == [b"%08d" % i for i in range(len(lines))]
    assert len(lines) % 3 == 0, "an unsynced record survived"
    assert len(lines) >= acked[-1], "a record reported synced was lost"
    assert report.files_reverted <= 1  # 0 when the kill fell right after an fsync


def test_with_a_journal_any_fsync_commits_every_name_but_only_its_own_data(
    tmp_path: Path,
) -> None:
    (tmp_path / "back").mkdir()
    with PowerCutFS(tmp_path / "back", tmp_path / "mnt", journal=True) as fs:
        (mnt(fs) / "evidence").mkdir()
        write(mnt(fs) / "evidence" / "unsynced.jpg", b"data never synced", sync=False)
        write(mnt(fs) / "custody.jsonl", b"entry\n")  # this fsync commits the journal
        write(mnt(fs) / "synced", b"its fsync committed its name")
        os.unlink(mnt(fs) / "synced")  # no fsync after this: it comes back
        write(mnt(fs) / "lost", b"created after the last fsync", sync=False)
        fs.cut()
    assert sorted(os.listdir(tmp_path / "back")) == ["custody.jsonl", "evidence", "synced"]
    assert (tmp_path / "back" / "synced").read_bytes() == b"its fsync committed its name"
    assert (tmp_path / "back" / "custody.jsonl").read_bytes() == b"entry\n"
    assert (tmp_path / "back" / "evidence" / "unsynced.jpg").read_bytes() == b""
