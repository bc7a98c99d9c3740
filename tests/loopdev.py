"""Loop-device helpers for tests: ext4 images, attach/detach, a vanishing device, cleanup.

A vanishing device is simulated with the kernel's filesystem shutdown ioctl
(FS_IOC_SHUTDOWN, as `xfs_io -c shutdown` does) plus `losetup -d`: after the shutdown every
read on the volume fails with EIO, which is what a mounted USB volume does when the stick is
pulled; `losetup -d` on a mounted loop device only sets autoclear (the kernel emits no event
then), and the device is released, with a `change` event to size 0, once it is unmounted.
Device-mapper error targets are not available here (no dm module).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import BaySection, RecordersSection
from agent.dock import hardware
from firmware_interface.discovery import BayFault
from firmware_interface.udev import UdevBayWatcher
from tests.media import make_photo, make_video, make_wav

FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
SHUTDOWN_NOLOGFLUSH = 2


def loop_skip_reason() -> str | None:
    """Why loop-device tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root and loop devices: not running as root"
    if not Path("/dev/loop-control").exists():
        return "needs root and loop devices: /dev/loop-control is missing"
    missing = [t for t in ("losetup", "mkfs.ext4", "mount", "umount") if not shutil.which(t)]
    if missing:
        return f"needs root and loop devices: {', '.join(missing)} not installed"
    return None


def run(*cmd: str) -> str:
    """Run a command, raising with its stderr on failure; returns stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def build_ext4(src: Path, image: Path, size_mb: int = 24) -> Path:
    """An ext4 image holding the tree `src` (a filesystem on the whole disk, no partitions)."""
    run("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(src), str(image), f"{size_mb}M")
    return image


def blank_image(image: Path, size_mb: int = 1) -> Path:
    """An image with no filesystem at all."""
    with open(image, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    return image


def write_recorder(root: Path, **overrides: Any) -> None:
    """recorder.json and a small event log in a volume tree."""
    data = {
        "device_id": "ZFY0012345",
        "model": "DSJ-T9",
        "firmware": "2.1.7",
        "officer_id": "012345",
        "officer_name": "李四",
        "battery_pct": 64,
        "storage_total_bytes": 64_000_000_000,
    }
    data.update(overrides)
    (root / "recorder.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (root / "LOG").mkdir(exist_ok=True)
    line = {"ts": "2026-11-21T09:14:03", "event": "power_on"}
    (root / "LOG" / "events.jsonl").write_text(json.dumps(line) + "\n")


CLIP_NAMES = (
    "DCIM/100MEDIA/ZFY0012345_012345_20261121091403_0001.MP4",
    "DCIM/100MEDIA/ZFY0012345_012345_20261121092010_0002.MP4",
    "DCIM/100MEDIA/ZFY0012345_012345_20261121093000_0003.JPG",
    "DCIM/AUDIO/ZFY0012345_012345_20261121094000_0004.WAV",
)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real clips (H.264 video, JPEG, WAV), made once per session, by volume path."""
    base = tmp_path_factory.mktemp("media")
    makers = (make_video, make_video, make_photo, make_wav)
    return {name: maker(base / name) for name, maker in zip(CLIP_NAMES, makers, strict=True)}


def recorder_tree(dest: Path, media: dict[str, Path], **overrides: Any) -> Path:
    """A recorder volume tree at `dest`: the clips, recorder.json and LOG/events.jsonl."""
    for name, path in media.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / name)
    write_recorder(dest, **overrides)
    return dest


def sectors(device: str) -> int:
    """The size of a block device in 512-byte sectors (0: nothing attached)."""
    return int(Path(f"/sys/class/block/{Path(device).name}/size").read_text())


def mounted_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first."""
    want = os.path.realpath(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point == want or point.startswith(want + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


LOOP_LOCK = Path("/run/lock/dock-agent-tests-loop.lock")


class Loops:
    """Loop devices and mounts of one test; everything is released at teardown.

    A device named by `free()` is only free at that moment: the test then starts a daemon that
    waits for it and attaches an image later, or re-attaches it as a recorder re-enumerates.
    Tests run in parallel workers, so from `free()` to teardown the test holds a lock that
    every other `free()` waits for: no other worker can take the device meanwhile.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[str] = []
        self._lock_fd: int | None = None

    def free(self) -> str:
        """A loop device free now (its name is needed for udev_match before attaching)."""
        self._hold_lock()
        device = run("losetup", "-f")
        self.devices.append(device)
        return device

    def attach(self, image: Path, device: str | None = None) -> str:
        """Attach `image` to `device` (or the first free one); returns the device."""
        self._hold_lock()
        if device is None:
            device = run("losetup", "-f", "--show", str(image))
        else:
            run("losetup", device, str(image))
        if device not in self.devices:
            self.devices.append(device)
        return device

    def _hold_lock(self) -> None:
        """Take the workers' loop-device lock until teardown (once per test)."""
        if self._lock_fd is None:
            LOOP_LOCK.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(LOOP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def detach(self, device: str) -> None:
        """losetup -d: immediate when unused, deferred (autoclear) while mounted."""
        run("losetup", "-d", device)

    def swap_command(self, device: str, image: Path) -> str:
        """A shell command that re-attaches `device` to `image`, as a recorder re-enumerates.

        `losetup -d` is deferred while anyone (udev's blkid, the watcher's probe) still holds
        the device open, and attaching meanwhile fails with EBUSY, so the attach is retried
        for up to 10 s.
        """
        return (
            f"losetup -d {device}; for i in $(seq 200); do "
            f"losetup {device} {image} 2>/dev/null && exit 0; sleep 0.05; done; exit 1"
        )

    def vanish(self, mount_point: Path, device: str) -> None:
        """Make a mounted volume behave as if its device were pulled out."""
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", SHUTDOWN_NOLOGFLUSH))
        finally:
            os.close(fd)
        self.detach(device)

    def cleanup(self) -> None:
        """Unmount everything under the test's directory, then detach its loop devices."""
        for point in mounted_under(self.root):
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        for device in self.devices:
            if sectors(device) > 0:
                subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    """Root + loop devices, or a skip saying why not; always cleaned up."""
    reason = loop_skip_reason()
    if reason:
        pytest.skip(reason)
    helper = Loops(tmp_path)
    try:
        yield helper
    finally:
        helper.cleanup()


class EventSink:
    """Collects DockEvents from a watcher thread; tests wait for the one they expect."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()

    def __call__(self, event: Any) -> None:
        self.queue.put(event)

    def wait_for(self, kind: type, bay: int, timeout: float = 10.0) -> Any:
        """The next event of `kind` for `bay`; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(event, kind) and event.bay == bay:
                return event
            if isinstance(event, BayFault) and kind is not BayFault:
                raise AssertionError(f"bay {event.bay} faulted: {event.code}: {event.message}")
        raise AssertionError(f"no {kind.__name__} for bay {bay} within {timeout} s")

    def pending(self) -> list[Any]:
        """Events received and not yet waited for."""
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items


def partitioned_image(fs_image: Path, image: Path) -> Path:
    """A disk image with an MBR partition table whose one partition (at 1 MiB) is `fs_image`."""
    start = 2048  # sectors
    count = fs_image.stat().st_size // 512
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", start, count)
    mbr = bytearray(512)
    mbr[446 : 446 + 16] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(image, "wb") as out:
        out.write(mbr)
        out.seek(start * 512)
        out.write(fs_image.read_bytes())
    return image


WatcherFactory = Callable[..., tuple[UdevBayWatcher, EventSink]]


@pytest.fixture
def start_watcher(tmp_path: Path, loops: Loops) -> Iterator[WatcherFactory]:
    """Start UdevBayWatchers for given bays (mounts under tmp_path/media); stopped at teardown."""
    started: list[UdevBayWatcher] = []

    def start(bays: list[BaySection], recorders: RecordersSection | None = None, **kw: Any) -> Any:
        recorders = recorders or RecordersSection(mount_dir=str(tmp_path / "media"))
        specs = [hardware.bay_spec(bay) for bay in bays]
        access = hardware.recorder_access(recorders)
        watcher = UdevBayWatcher(specs, access, ZoneInfo("Asia/Shanghai"), **kw)
        sink = EventSink()
        watcher.start(sink)
        started.append(watcher)
        return watcher, sink

    yield start
    for watcher in started:
        watcher.stop()
