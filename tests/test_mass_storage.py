"""The mass-storage driver on real ext4 volumes on loop devices: read-only, exact, contained."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_interface import mount
from firmware_interface.base import ClipEntry, RecorderError, RecorderGone
from firmware_interface.mass_storage import MassStorageRecorder, utc_offset_min, wall_clock_epoch
from tests.loopdev import CLIP_NAMES, Loops, build_ext4, recorder_tree, sectors  # noqa: E402

pytest_plugins = ["tests.loopdev"]  # fixtures: loops, media_files


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mounted(loops: Loops, tmp_path: Path, tree: Path) -> MassStorageRecorder:
    """Build an image of `tree`, attach it, and mount it as the driver does."""
    device = loops.attach(build_ext4(tree, tmp_path / "rec.img"))
    fstype = mount.probe_fs_type(device)
    assert fstype == "ext4"
    return MassStorageRecorder.mount(device, tmp_path / "media" / "bay1", 1, fstype)


@pytest.fixture
def tree(tmp_path: Path, media_files: dict[str, Path]) -> Path:
    return recorder_tree(tmp_path / "tree", media_files)


def test_volume_is_mounted_read_only_nosuid_nodev_noexec(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    rec = mounted(loops, tmp_path, tree)
    opts = mount.mount_options(rec.mount_point)
    assert opts is not None and {"ro", "nosuid", "nodev", "noexec"} <= opts
    assert "norecovery" in opts  # ext4's name for noload: the journal is not replayed
    with pytest.raises(OSError) as info:
        (rec.mount_point / "DCIM" / "new.MP4").write_bytes(b"x")
    assert info.value.errno == errno.EROFS
    rec.close()
    assert not mount.is_mounted(rec.mount_point)
    rec.close()  # twice is harmless


def test_clips_listed_and_read_byte_identical(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    rec = mounted(loops, tmp_path, tree)
    listing = rec.list_clips()
    assert [c.path for c in listing.clips] == sorted(CLIP_NAMES)
    assert listing.findings == []  # lost+found, recorder.json and LOG/ are not media
    for clip in listing.clips:
        with rec.open_clip(clip) as fh:
            assert sha256(fh.read()) == sha256((tree / clip.path).read_bytes()), clip.path
    assert rec.identity().device_id == "ZFY0012345"
    assert rec.identity().officer_name == "李四"
    assert [e.event for e in rec.read_events().events] == ["power_on"]


def test_status_storage_from_statvfs_and_clock_unknown(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    rec = mounted(loops, tmp_path, tree)
    status = rec.status()
    st = os.statvfs(rec.mount_point)
    assert status.storage_total_bytes == st.f_blocks * st.f_frsize
    assert 0 < (status.storage_free_bytes or 0) < status.storage_total_bytes
    assert status.battery_pct == 64
    assert status.clock is None and not rec.capabilities.read_clock
    with pytest.raises(RecorderError) as info:
        rec.set_clock(datetime(2026, 11, 21, 9, 0))
    assert info.value.code == "clock_unsupported"


def test_delete_remounts_rw_only_for_the_delete(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    rec = mounted(loops, tmp_path, tree)
    clip = rec.list_clips().clips[0]
    rec.delete_clip(clip)
    assert clip.path not in [c.path for c in rec.list_clips().clips]
    assert "ro" in (mount.mount_options(rec.mount_point) or set())
    rec.close()
    remount = MassStorageRecorder.mount(rec.device, rec.mount_point, 1, "ext4")
    assert clip.path not in [c.path for c in remount.list_clips().clips]  # it reached the disk


def test_hostile_volume_gives_findings_and_stays_inside(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    media = tree / "DCIM" / "100MEDIA"
    (media / "PASSWD.MP4").symlink_to("/etc/passwd")
    (media / "ETC").symlink_to("/etc")
    (media / "EMPTY.MP4").write_bytes(b"")
    (tree / "DCIM" / "OUT").symlink_to("../../..")
    rec = mounted(loops, tmp_path, tree)
    listing = rec.list_clips()
    codes = sorted(f.code for f in listing.findings)
    assert codes == ["symlink_refused"] * 3 + ["zero_byte_file"]
    assert all("PASSWD" not in c.path and "ETC" not in c.path for c in listing.clips)
    for path in ("DCIM/100MEDIA/PASSWD.MP4", "DCIM/100MEDIA/ETC/passwd", "DCIM/../../etc/passwd"):
        with pytest.raises(RecorderError):
            rec.open_clip(ClipEntry(path, 1, 0.0, "video"))


def test_device_vanishing_mid_read_raises_recorder_gone(
    loops: Loops,
    tmp_path: Path,
    tree: Path,
) -> None:
    (tree / "DCIM" / "100MEDIA" / "BIG.MP4").write_bytes(os.urandom(6 * 1024 * 1024))
    rec = mounted(loops, tmp_path, tree)
    big = next(c for c in rec.list_clips().clips if c.name == "BIG.MP4")
    with rec.open_clip(big) as fh:
        assert len(fh.read(64 * 1024)) == 64 * 1024
        loops.vanish(rec.mount_point, rec.device)
        with pytest.raises(RecorderGone):
            while fh.read(1024 * 1024):
                pass
    assert not mount.is_mounted(rec.mount_point)  # released, so the kernel can let it go
    assert sectors(rec.device) == 0
    with pytest.raises(RecorderGone):
        rec.list_clips()


# ---- FAT volumes: file times are the recorder's wall clock --------------------------------


def test_fat_file_time_is_put_back_into_the_recorders_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    as_utc = datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC).timestamp()  # FAT 09:14:03, tz=UTC
    true = datetime.fromtimestamp(wall_clock_epoch(as_utc, shanghai), UTC)
    assert true == datetime(2026, 11, 21, 1, 14, 3, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")  # the zone's offset on that day, not today's
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(wall_clock_epoch(summer, berlin), UTC).hour == 10
    assert "tz=UTC" in mount.fs_data("vfat").split(",")
    assert mount.WALL_CLOCK_FS == {"vfat"}


def test_exfat_times_without_an_offset_are_read_in_the_recorders_zone() -> None:
    """exFAT carries an offset when the writer sets it; else the kernel uses time_offset."""
    assert utc_offset_min(ZoneInfo("Asia/Shanghai")) == 480
    assert utc_offset_min(ZoneInfo("America/St_Johns")) in (-210, -150)
    assert utc_offset_min(None) is None
    assert "time_offset=480" in mount.fs_data("exfat", 480).split(",")
    assert not any(o.startswith("time_offset") for o in mount.fs_data("exfat").split(","))
    assert mount.fs_data("ext4", 480) == "noload"


def test_listing_of_a_fat_volume_gives_true_file_times(tmp_path: Path) -> None:
    """The driver over a volume mounted tz=UTC: the listing's mtimes are true times."""
    root = tmp_path / "volume"
    clip = root / "DCIM" / "100MEDIA" / "CLIP0001.MP4"  # a name that does not parse
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"\0" * 64)
    fat_time = datetime(2026, 11, 21, 9, 14, 3, tzinfo=UTC).timestamp()
    os.utime(clip, (fat_time, fat_time))
    plain = MassStorageRecorder("/dev/null", root, 1).list_clips().clips
    fat = MassStorageRecorder("/dev/null", root, 1, ZoneInfo("Asia/Shanghai")).list_clips().clips
    assert [c.mtime for c in plain] == [fat_time]
    assert [datetime.fromtimestamp(c.mtime, UTC) for c in fat] == [
        datetime(2026, 11, 21, 1, 14, 3, tzinfo=UTC)
    ]


def vfat_skip_reason() -> str | None:
    if "vfat" not in Path("/proc/filesystems").read_text().split():
        return "this kernel has no vfat driver (not in /proc/filesystems)"
    missing = [t for t in ("mkfs.vfat", "mcopy", "mmd") if not shutil.which(t)]
    return f"missing {', '.join(missing)} (dosfstools, mtools)" if missing else None


def test_vfat_volume_mounted_read_only_with_true_file_times(
    loops: Loops, tmp_path: Path, tree: Path
) -> None:
    if reason := vfat_skip_reason():
        pytest.skip(reason)
    image = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-C", str(image), "32768"], check=True, capture_output=True)
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        cmd = ["mmd"] if path.is_dir() else ["mcopy", "-m", str(path)]
        subprocess.run([*cmd, "-i", str(image), f"::{rel}"], check=True, env={"TZ": "UTC"})
    device = loops.attach(image)
    assert mount.probe_fs_type(device) == "vfat"
    rec = MassStorageRecorder.mount(
        device, tmp_path / "media" / "bay1", 1, "vfat", ZoneInfo("Asia/Shanghai")
    )
    try:
        assert "ro" in mount.mount_options(rec.mount_point)
        clips = rec.list_clips().clips
        assert [c.path for c in clips] == sorted(CLIP_NAMES)
        for clip in clips:
            with rec.open_clip(clip) as fh:
                assert sha256(fh.read()) == sha256((tree / clip.path).read_bytes())
            wall = datetime.fromtimestamp(
                (tree / clip.path).stat().st_mtime, UTC
            )  # mcopy -m, TZ=UTC
            true = datetime.fromtimestamp(clip.mtime, UTC)
            assert abs((wall - true).total_seconds() - 8 * 3600) <= 2, clip.path  # FAT: 2 s
    finally:
        rec.close()
