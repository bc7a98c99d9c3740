"""SPEC 10 recorder-speed row: 1, 2, 4 and 8 bays whose recorders read at USB 2.0 speed.

Each bay's recorder is an ext4 volume on a loop device of its own, its image in /dev/shm (a
recorder is not the dock's disk), read through the real udev and mount path (the daemon's
mass_storage driver, kernel uevents). The daemon runs in a process of its own inside a blkio
cgroup that limits every recorder device to 35 MB/s of reads (cgroup v1
`blkio.throttle.read_bps_device`); nothing else runs in that cgroup but the baseline's `cat`.
Each bay is timed from its `losetup` (the recorder plugged in) to the bay leaving
`offloading` with every clip stored; afterwards every clip is checked in the index and the
store. The baseline is each recorder read alone by `cat` in the same cgroup, cache dropped.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.bench import Row, median
from tests.bench.bench_offload import WORK_DIR, clip_name, drop_caches, random_file
from tests.bench.daemon_proc import DaemonProc, check_stored

RATE = 35_000_000  # bytes/s: a recorder's storage over USB 2.0
BLKIO = Path("/sys/fs/cgroup/blkio")
LOOP_BASE = 240  # our loop devices: far above the ones `losetup -f` hands to other tests
LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
TARGET = 1.05
SATURATED = 0.9  # busy fraction of the CPUs or of the store's disk
MB = 10**6


@dataclass(frozen=True)
class Volume:
    """One recorder: its image, its loop device, its files and their sha256."""

    bay: int
    image: Path
    device: str
    files: dict[str, tuple[str, int]]  # volume path: (sha256, size)


def skip_reason() -> str | None:
    """Why this row cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts, a blkio cgroup)"
    if not (BLKIO / "blkio.throttle.read_bps_device").exists():
        return f"no cgroup v1 blkio throttling at {BLKIO} (a throttling layer is not written)"
    missing = [t for t in ("losetup", "mkfs.ext4", "mount", "umount") if not shutil.which(t)]
    if missing or not Path("/dev/loop-control").exists():
        return f"needs loop devices and {', '.join(missing) or '/dev/loop-control'}"
    return None


def run_cmd(*cmd: str) -> str:
    """Run a command, raising with its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


# ---- the recorders ------------------------------------------------------------------------


def recorder_tree(tree: Path, bay: int, clip: int, small: int) -> dict[str, tuple[str, int]]:
    """A recorder volume's files: one clip of `clip` bytes and `small` photos of 1 MB."""
    device = f"ZFY{bay:07d}"
    files: dict[str, tuple[str, int]] = {}
    sizes = [clip] + [MB] * small
    for seq, size in enumerate(sizes, start=1):
        rel = f"DCIM/100MEDIA/{clip_name(seq, 'MP4' if seq == 1 else 'JPG', device)}"
        path = random_file(tree / rel, size)
        files[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), size)
    (tree / "recorder.json").write_text(
        f'{{"device_id": "{device}", "model": "DSJ-T9", "officer_id": "012345"}}',
        encoding="utf-8",
    )
    return files


@contextmanager
def loop_devices(count: int) -> Iterator[list[str]]:
    """`count` unbound loop devices of our own (made with LOOP_CTL_ADD), removed at the end."""
    made: list[int] = []
    fd = os.open("/dev/loop-control", os.O_RDWR)
    try:
        devices = []
        for n in range(LOOP_BASE, LOOP_BASE + count):
            if not Path(f"/sys/class/block/loop{n}").exists():
                fcntl.ioctl(fd, LOOP_CTL_ADD, n)
                made.append(n)
            if int(Path(f"/sys/class/block/loop{n}/size").read_text()) != 0:
                raise RuntimeError(f"/dev/loop{n} is in use")
            devices.append(f"/dev/loop{n}")
        yield devices
    finally:
        for n in made:
            with suppress(OSError):
                fcntl.ioctl(fd, LOOP_CTL_REMOVE, n)
        os.close(fd)


def volumes(root: Path, devices: list[str], clip: int, small: int) -> list[Volume]:
    """One ext4 recorder image per device."""
    made = []
    for bay, device in enumerate(devices, start=1):
        tree = root / f"tree{bay}"
        files = recorder_tree(tree, bay, clip, small)
        image = root / f"rec{bay}.img"
        size_mb = (clip + small * MB) * 12 // 10 // 2**20 + 16
        run_cmd(
            "mkfs.ext4",
            "-q",
            "-F",
            "-E",
            "root_owner=0:0",
            "-d",
            str(tree),
            str(image),
            f"{size_mb}M",
        )
        shutil.rmtree(tree)
        made.append(Volume(bay, image, device, files))
    return made


@contextmanager
def throttled(devices: list[str]) -> Iterator[Path]:
    """A blkio cgroup limiting reads from each of `devices` to RATE; removed at the end."""
    group = BLKIO / f"dock-bench-{os.getpid()}"
    group.mkdir()
    try:
        for device in devices:
            majmin = Path(f"/sys/class/block/{Path(device).name}/dev").read_text().strip()
            (group / "blkio.throttle.read_bps_device").write_text(f"{majmin} {RATE}\n")
        yield group
    finally:
        for _ in range(100):  # the daemon's last threads may take a moment to leave
            with suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.1)


# ---- the baseline: each recorder read alone -----------------------------------------------


def read_alone(vol: Volume, root: Path, group: Path) -> float:
    """Seconds `cat` takes to read every file of the recorder, throttled, cache dropped."""
    mnt = root / f"alone{vol.bay}"
    mnt.mkdir(exist_ok=True)
    run_cmd("losetup", vol.device, str(vol.image))
    try:
        run_cmd("mount", "-o", "ro", vol.device, str(mnt))
        try:
            drop_caches()
            script = 'echo $$ > "$0/cgroup.procs"; exec cat "$@" > /dev/null'
            started = time.perf_counter()
            subprocess.run(["sh", "-c", script, str(group), *vol.files], cwd=mnt, check=True)
            return time.perf_counter() - started
        finally:
            run_cmd("umount", str(mnt))
    finally:
        run_cmd("losetup", "-d", vol.device)


# ---- the daemon with N recorders at once --------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One docking of N recorders: each bay's seconds from plug-in to done, and the load."""

    seconds: dict[int, float]
    cpu_busy: float  # of the machine's CPUs, other load included
    daemon_cpu: float  # the daemon's share of the machine's CPUs
    disk_busy: float  # of the store's disk (io_ticks)


def config(root: Path, vols: list[Volume]) -> dict[str, object]:
    """Mass storage bays matched by their loop device, the store under `root`."""
    return {
        "dock": {"id": "dock-bench", "data_dir": str(root / "data")},
        "bay": [
            {"number": v.bay, "udev_match": {"DEVNAME": v.device}, "driver": "mass_storage"}
            for v in vols
        ],
        "recorders": {"mount_dir": str(root / "media")},
        "policy": {
            "require_synced_clock": False,
            "disk_reserve_bytes": 0,
            "delete_from_recorder": "never",
        },
        "mqtt": {"port": 1},  # nothing listens: the dock works offline
        "ui": {"listen": ""},
    }


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total  # idle and iowait are not busy


def store_disk() -> str:
    """The block device name (as in /proc/diskstats) holding WORK_DIR."""
    dev = os.stat(WORK_DIR).st_dev
    return Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name


def disk_ms(name: str) -> int:
    """Milliseconds `name` has been busy (io_ticks of /proc/diskstats)."""
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == name:
            return int(fields[12])
    return 0


def dock_all(root: Path, vols: list[Volume], group: Path) -> Run:
    """Plug in every recorder of `vols` at once; time each bay; check every clip stored."""
    daemon = DaemonProc(config(root, vols), root, group)
    attached: dict[int, float] = {}
    try:
        daemon.wait_ready()
        drop_caches()
        disk, cpu0, own0 = store_disk(), cpu_ticks(), daemon.cpu_seconds()
        ms0 = disk_ms(disk)
        since = time.monotonic()
        for v in vols:
            run_cmd("losetup", v.device, str(v.image))
            attached[v.bay] = time.monotonic()
        done = daemon.finished([v.bay for v in vols], since, timeout=600)
        wall = max(done.values()) - since
        cpu1, own1, ms1 = cpu_ticks(), daemon.cpu_seconds(), disk_ms(disk)
    finally:
        daemon.stop()
        for v in vols:
            if v.bay in attached:
                subprocess.run(["losetup", "-d", v.device], capture_output=True, check=False)
    expected = {Path(rel).name: item for v in vols for rel, item in v.files.items()}
    check_stored(root / "data", expected)
    shutil.rmtree(root / "data")
    busy, total = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return Run(
        {b: done[b] - attached[b] for b in done},
        busy / max(total, 1),
        (own1 - own0) / wall / (os.cpu_count() or 1),
        (ms1 - ms0) / 1000 / wall,
    )


# ---- the rows -----------------------------------------------------------------------------


def row(n: int, runs: list[Run], alone: dict[int, float], clip: int, small: int) -> Row:
    """The row of `n` bays: the slowest bay against its recorder read alone."""
    worst = [max(r.seconds[b] / alone[b] for b in r.seconds) for r in runs]
    ratio = median(worst)
    last = runs[worst.index(ratio)] if ratio in worst else runs[-1]
    cpu, disk = median([r.cpu_busy for r in runs]), median([r.disk_busy for r in runs])
    limit = "CPU" if cpu >= SATURATED else "disk" if disk >= SATURATED else ""
    slow = median([max(r.seconds.values()) for r in runs])
    load = (
        f"machine CPU {cpu:.0%} busy (daemon {median([r.daemon_cpu for r in runs]):.0%} of "
        f"{os.cpu_count()} CPUs), store disk {store_disk()} {disk:.0%} busy"
    )
    saturation = f"{limit} saturated" if limit else "neither disk nor CPU saturated"
    return Row(
        f"{n} bay{'s' if n > 1 else ''} whose recorders read at 35 MB/s "
        f"(one {clip // MB} MB clip and {small} of 1 MB each)",
        f"each bay ≤ {TARGET} × its recorder read alone, up to disk or CPU saturation",
        "each recorder read alone by cat in the throttled cgroup, cache dropped: "
        f"{min(alone.values()):.2f}–{max(alone.values()):.2f} s (median of each)",
        f"slowest bay {slow:.2f} s from plug-in to every clip stored and verified "
        f"(median of {len(runs)}, per-run worst ratio {min(worst):.2f}–{max(worst):.2f}; "
        f"{len(last.seconds)} bays: {', '.join(f'{s:.2f}' for s in last.seconds.values())} s); "
        f"{load}: {saturation}; throttle: blkio cgroup v1",
        ratio,
        ratio <= TARGET or bool(limit),
    )


def rows_for(shm: Path, root: Path, quick: bool) -> list[Row]:
    """Read each recorder alone, then dock 1, 2, 4, 8 of them at once (images in `shm`)."""
    counts, clip, small, repeats = (
        ((1, 2), 20 * MB, 4, 1) if quick else ((1, 2, 4, 8), 100 * MB, 16, 3)
    )
    with loop_devices(max(counts)) as devices, throttled(devices) as group:
        vols = volumes(shm, devices, clip, small)
        alone = {v.bay: median([read_alone(v, root, group) for _ in range(repeats)]) for v in vols}
        rows = []
        for n in counts:
            runs = [dock_all(root, vols[:n], group) for _ in range(repeats)]
            rows.append(row(n, runs, alone, clip, small))
    return rows


def run(quick: bool) -> list[Row]:
    """The recorder-speed rows of SPEC 10 (skipped, saying why, where the machine cannot)."""
    reason = skip_reason()
    if reason is not None:
        what = "bays whose recorders read at USB 2.0 speed"
        target = f"each bay ≤ {TARGET} × its recorder alone"
        return [Row(what, target, "-", f"skipped: {reason}", None, False)]
    with (
        tempfile.TemporaryDirectory(prefix="bench-recorders-", dir="/dev/shm") as shm,
        tempfile.TemporaryDirectory(prefix="bench-recorders-", dir=WORK_DIR) as root,
    ):
        return rows_for(Path(shm), Path(root), quick)
