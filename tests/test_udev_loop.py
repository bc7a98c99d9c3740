"""UdevBayWatcher with real kernel uevents from loop devices: dock, read, vanish, undock."""

from __future__ import annotations

import hashlib
import queue
from pathlib import Path

import pytest

from agent.config import BaySection
from firmware_interface import mount
from firmware_interface.base import RecorderGone
from firmware_interface.discovery import BayFault, Docked, Undocked
from firmware_interface.mass_storage import MassStorageRecorder
from tests.loopdev import (  # noqa: E402
    CLIP_NAMES,
    Loops,
    WatcherFactory,
    blank_image,
    build_ext4,
    partitioned_image,
    recorder_tree,
    run,
    sectors,
)

pytest_plugins = ["tests.loopdev"]  # fixtures: loops, media_files, start_watcher


@pytest.fixture
def image(tmp_path: Path, media_files: dict[str, Path]) -> Path:
    """An ext4 recorder volume with a filesystem on the whole disk (no partition table)."""
    tree = recorder_tree(tmp_path / "tree", media_files)
    return build_ext4(tree, tmp_path / "rec.img")


def bay(number: int, device: str) -> BaySection:
    return BaySection(number=number, udev_match={"DEVNAME": device})


def test_attach_docks_read_only_and_unplug_undocks(
    loops: Loops, start_watcher: WatcherFactory, image: Path, media_files: dict[str, Path]
) -> None:
    device, other = loops.free(), "/dev/loop-none"
    watcher, events = start_watcher([bay(3, device), bay(4, other)])
    loops.attach(image, device)
    docked = events.wait_for(Docked, 3)
    rec = docked.recorder
    assert docked.driver == "mass_storage" and isinstance(rec, MassStorageRecorder)
    assert rec.mount_point == watcher.mount_point(3)
    assert {"ro", "nosuid", "nodev", "noexec"} <= (mount.mount_options(rec.mount_point) or set())
    clips = rec.list_clips().clips
    assert [c.path for c in clips] == sorted(CLIP_NAMES)
    for clip in clips:
        with rec.open_clip(clip) as fh:
            got = hashlib.sha256(fh.read()).hexdigest()
        assert got == hashlib.sha256(media_files[clip.path].read_bytes()).hexdigest()

    with rec.open_clip(clips[0]) as fh:
        loops.vanish(rec.mount_point, device)  # pulled out mid-read
        with pytest.raises(RecorderGone):
            fh.read()
    events.wait_for(Undocked, 3)
    assert not mount.is_mounted(rec.mount_point) and sectors(device) == 0
    assert not [e for e in events.pending() if e.bay == 4]


def test_device_present_before_start_is_docked_and_detach_undocks(
    loops: Loops, start_watcher: WatcherFactory, image: Path
) -> None:
    device = loops.attach(image)
    _, events = start_watcher([bay(1, device)])
    rec = events.wait_for(Docked, 1).recorder
    assert rec.identity().device_id == "ZFY0012345"
    rec.close()  # the agent is done with it; then the loop device is detached
    loops.detach(device)
    events.wait_for(Undocked, 1)


def test_partition_of_the_bays_disk_is_mounted(
    loops: Loops, start_watcher: WatcherFactory, image: Path, tmp_path: Path
) -> None:
    disk_image = partitioned_image(image, tmp_path / "disk.img")
    device = loops.free()
    _, events = start_watcher([bay(2, device)])
    run("losetup", "-P", device, str(disk_image))
    if not Path(f"/sys/class/block/{Path(device).name}p1").exists():
        run("partx", "-a", device)  # a kernel without the MBR parser: add the partition by hand
    rec = events.wait_for(Docked, 2).recorder
    assert rec.device == f"{device}p1"
    assert len(rec.list_clips().clips) == len(CLIP_NAMES)
    loops.vanish(rec.mount_point, device)
    with pytest.raises(RecorderGone):
        rec.status()
    events.wait_for(Undocked, 2)


def test_blank_medium_is_ignored_and_foreign_filesystem_faults(
    loops: Loops, start_watcher: WatcherFactory, tmp_path: Path
) -> None:
    device = loops.free()
    _, events = start_watcher([bay(5, device)])
    loops.attach(blank_image(tmp_path / "blank.img"), device)
    with pytest.raises(queue.Empty):
        events.queue.get(timeout=1.0)
    loops.detach(device)
    minix = blank_image(tmp_path / "minix.img")
    run("mkfs.minix", str(minix))
    loops.attach(minix, device)
    fault = events.wait_for(BayFault, 5)
    assert fault.code == "unsupported_filesystem" and "minix" in fault.message
    loops.detach(device)
    events.wait_for(Undocked, 5)  # the fault clears when the device leaves
