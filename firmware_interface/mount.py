"""Mounting recorder volumes: read-only for acquisition, read-write only for a permitted delete.

A read-only acquisition must not write the device: every mount is `ro,nosuid,nodev,noexec`,
and ext2/3/4 add `noload` so that a dirty journal is not replayed onto the recorder.
The `mount`/`umount` commands are used (not mount(2) through ctypes) for their error
messages and their knowledge of each filesystem's option syntax.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from firmware_interface.base import RecorderError

logger = logging.getLogger(__name__)

RO_OPTIONS = "ro,nosuid,nodev,noexec"
# blkid TYPE -> kernel filesystem driver; ext2/3 are served by the ext4 driver.
ALLOWED_FS = {"vfat": "vfat", "exfat": "exfat", "ext4": "ext4", "ext3": "ext4", "ext2": "ext4"}
TIMEOUT_S = 30.0


class MountError(RecorderError):
    """A volume could not be mounted, remounted or probed."""

    def __init__(self, message: str) -> None:
        super().__init__("mount_failed", message)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a mount tool, capturing its output; never raises for a non-zero exit."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"{cmd[0]}: {exc}") from exc


def probe_fs_type(devnode: str) -> str | None:
    """The filesystem type on a block device (blkid low-level probe), None when there is none.

    Returns "" when blkid is not installed: the caller then tries each allowed type.
    """
    if shutil.which("blkid") is None:
        return ""
    proc = _run(["blkid", "-p", "-o", "export", devnode])
    if proc.returncode == 2:  # nothing recognised (blank medium, or a partition table only)
        return None
    if proc.returncode != 0:
        raise MountError(f"blkid {devnode}: {proc.stderr.strip() or proc.returncode}")
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return props.get("TYPE") if props.get("USAGE", "filesystem") == "filesystem" else None


def ro_options(fstype: str) -> str:
    """Mount options for acquisition of a volume of `fstype` (a kernel driver name)."""
    return f"{RO_OPTIONS},noload" if fstype == "ext4" else RO_OPTIONS


def mount_ro(devnode: str, target: Path, fstype: str) -> str:
    """Mount `devnode` read-only on `target`; returns the driver used. fstype "" = try each."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_mounted(target):
        logger.warning("stale mount on %s; detaching it first", target)
        unmount(target)
    drivers = [ALLOWED_FS[fstype]] if fstype else sorted(set(ALLOWED_FS.values()))
    errors: list[str] = []
    for driver in drivers:
        cmd = ["mount", "-t", driver, "-o", ro_options(driver), devnode, str(target)]
        proc = _run(cmd)
        if proc.returncode == 0:
            return driver
        errors.append(f"{driver}: {proc.stderr.strip()}")
    raise MountError(f"cannot mount {devnode} read-only: {'; '.join(errors)}")


def remount(target: Path, writable: bool) -> None:
    """Remount a mounted volume read-write (for a permitted delete) or back read-only."""
    mode = "rw" if writable else "ro"
    proc = _run(["mount", "-o", f"remount,{mode}", str(target)])
    if proc.returncode != 0:
        raise MountError(f"remount {mode} {target}: {proc.stderr.strip()}")


def unmount(target: Path) -> None:
    """Unmount `target`; lazily (detach now, release when unused) when it is busy or gone."""
    if not is_mounted(target):
        return
    proc = _run(["umount", str(target)])
    if proc.returncode != 0 and is_mounted(target):
        logger.warning("umount %s: %s; detaching lazily", target, proc.stderr.strip())
        lazy = _run(["umount", "-l", str(target)])
        if lazy.returncode != 0 and is_mounted(target):
            raise MountError(f"umount -l {target}: {lazy.stderr.strip()}")


def _unescape(field: str) -> str:
    """Undo the octal escapes of /proc/self/mountinfo (space, tab, newline, backslash)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_options(target: Path) -> set[str] | None:
    """The per-mount and superblock options of the mount at `target`, None when not mounted."""
    want = os.path.realpath(target)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found: set[str] | None = None
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 5 and _unescape(fields[4]) == want:
            sep = fields.index("-")
            super_opts = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
            found = set(fields[5].split(",")) | set(super_opts)  # the last (top) mount wins
    return found


def is_mounted(target: Path) -> bool:
    """Whether something is mounted exactly at `target`."""
    return mount_options(target) is not None
