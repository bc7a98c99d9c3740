"""Mounting recorder volumes: read-only for acquisition, read-write only for a permitted delete.

A read-only acquisition must not write the device: every mount is `ro,nosuid,nodev,noexec`,
and ext2/3/4 add `noload` so that a dirty journal is not replayed onto the recorder.
The mount(2) and umount2(2) system calls are made directly (ctypes), not through the
`mount`/`umount` commands: util-linux mount(8) refuses a non-root caller ("must be
superuser") even with CAP_SYS_ADMIN, which is all the service keeps (dock-agent.service).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

from firmware_interface.base import RecorderError

logger = logging.getLogger(__name__)

RO_OPTIONS = "ro,nosuid,nodev,noexec"
# blkid TYPE -> kernel filesystem driver; ext2/3 are served by the ext4 driver.
WALL_CLOCK_FS = {"vfat"}  # file times are the writer's wall clock, with no zone
ALLOWED_FS = {"vfat": "vfat", "exfat": "exfat", "ext4": "ext4", "ext3": "ext4", "ext2": "ext4"}
TIMEOUT_S = 30.0

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MNT_DETACH = 2
SAFE_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
# FAT/exFAT store no owners: files belong to the mounter's fsuid unless uid=/gid= say so.
# Owner read-write (for a permitted delete), group read, others nothing; never executable.
FAT_MASKS = "fmask=0137,dmask=0027"

_ERRNO_TEXT = {
    errno.EPERM: "not permitted: needs CAP_SYS_ADMIN",
    errno.EACCES: "not permitted: needs CAP_SYS_ADMIN (or the device is write-protected)",
    errno.EINVAL: "wrong filesystem type, bad option or bad superblock",
    errno.ENODEV: "filesystem type not supported by the kernel",
    errno.EBUSY: "device or mount point busy (already mounted?)",
    errno.ENOENT: "device or mount point does not exist",
    errno.ENOTBLK: "not a block device",
    errno.ENXIO: "no such device (removed?)",
    errno.EROFS: "device is write-protected",
    errno.EIO: "I/O error on the device",
    errno.ENOTDIR: "mount point is not a directory",
}


class MountError(RecorderError):
    """A volume could not be mounted, remounted or probed."""

    def __init__(self, message: str) -> None:
        super().__init__("mount_failed", message)


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    """The C library (loaded once), with errno saved after each call."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            lib = ctypes.CDLL(None, use_errno=True)
        text = ctypes.c_char_p
        lib.mount.argtypes = [text, text, text, ctypes.c_ulong, text]
        lib.mount.restype = ctypes.c_int
        lib.umount2.argtypes = [text, ctypes.c_int]
        lib.umount2.restype = ctypes.c_int
        _libc = lib
    return _libc


def _describe(err: int) -> str:
    """A clear reason for a mount(2)/umount2(2) errno."""
    reason = _ERRNO_TEXT.get(err, "failed")
    return f"{reason} ({errno.errorcode.get(err, err)}: {os.strerror(err)})"


def _sys_mount(source: str, target: Path, fstype: str, flags: int, data: str) -> int:
    """mount(2); returns 0 or the errno."""
    enc = os.fsencode
    rc = _lib().mount(enc(source), enc(str(target)), enc(fstype), flags, enc(data) or None)
    return ctypes.get_errno() if rc != 0 else 0


def _sys_umount(target: Path, flags: int) -> int:
    """umount2(2); returns 0 or the errno."""
    rc = _lib().umount2(os.fsencode(str(target)), flags)
    return ctypes.get_errno() if rc != 0 else 0


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; never raises for a non-zero exit."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"{cmd[0]}: {exc}") from exc


def probe_fs_type(devnode: str) -> str | None:
    """The filesystem type on a block device (blkid low-level probe), None when there is none.

    Returns "" when blkid cannot probe (not installed, device not readable by this user,
    blkid failing): the caller then tries each allowed type, which needs no read access.
    """
    if shutil.which("blkid") is None:
        logger.warning("blkid not installed; trying each filesystem type on %s", devnode)
        return ""
    try:
        proc = _run(["blkid", "-p", "-o", "export", devnode])
    except MountError as exc:
        logger.warning("%s; trying each filesystem type on %s", exc, devnode)
        return ""
    stderr = proc.stderr.strip()
    if proc.returncode == 2 and not stderr:  # nothing recognised (blank, or a partition table)
        return None
    if proc.returncode != 0:  # blkid exits 2 also when it cannot open the device
        logger.warning(
            "blkid %s: %s; trying each filesystem type", devnode, stderr or proc.returncode
        )
        return ""
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return props.get("TYPE") if props.get("USAGE", "filesystem") == "filesystem" else None


def ro_options(fstype: str) -> str:
    """Mount options for acquisition of a volume of `fstype` (a kernel driver name)."""
    data = fs_data(fstype)
    return f"{RO_OPTIONS},{data}" if data else RO_OPTIONS


def fs_data(fstype: str, utc_offset_min: int | None = None) -> str:
    """The filesystem-specific mount(2) data for `fstype` (a kernel driver name).

    `utc_offset_min`: the recorders' zone offset, for exFAT times written without one.
    """
    owner = f"uid={os.geteuid()},gid={os.getegid()},{FAT_MASKS}"
    if fstype == "ext4":
        return "noload"
    if fstype == "vfat":
        return f"{owner},utf8,shortname=mixed,tz=UTC"  # file times as written: wall clock
    if fstype == "exfat":
        offset = "" if utc_offset_min is None else f",time_offset={utc_offset_min}"
        return f"{owner},iocharset=utf8{offset}"
    return ""


def mount_ro(devnode: str, target: Path, fstype: str, utc_offset_min: int | None = None) -> str:
    """Mount `devnode` read-only on `target`; returns the driver used. fstype "" = try each."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if is_mounted(target):
        logger.warning("stale mount on %s; detaching it first", target)
        unmount(target)
    drivers = [ALLOWED_FS[fstype]] if fstype else list(dict.fromkeys(ALLOWED_FS.values()))
    errors: list[str] = []
    for driver in drivers:
        data = fs_data(driver, utc_offset_min)
        err = _sys_mount(devnode, target, driver, MS_RDONLY | SAFE_FLAGS, data)
        if err == 0:
            return driver
        errors.append(f"{driver}: {_describe(err)}")
        if err in (errno.EPERM, errno.EACCES, errno.ENOENT, errno.ENOTBLK, errno.ENXIO):
            break  # no other type can do better
    raise MountError(f"cannot mount {devnode} read-only on {target}: {'; '.join(errors)}")


def remount(target: Path, writable: bool, utc_offset_min: int | None = None) -> None:
    """Remount a mounted volume read-write (for a permitted delete) or back read-only."""
    mode = "rw" if writable else "ro"
    fstype = mount_fstype(target)
    if fstype is None:
        raise MountError(f"remount {mode} {target}: not mounted")
    flags = MS_REMOUNT | SAFE_FLAGS | (0 if writable else MS_RDONLY)  # keep nosuid,nodev,noexec
    err = _sys_mount("", target, fstype, flags, fs_data(fstype, utc_offset_min))
    if err:
        raise MountError(f"remount {mode} {target}: {_describe(err)}")


def unmount(target: Path) -> None:
    """Unmount `target`; lazily (detach now, release when unused) when it is busy or gone."""
    if not is_mounted(target):
        return
    err = _sys_umount(target, 0)
    if err and is_mounted(target):
        logger.warning("umount %s: %s; detaching lazily", target, _describe(err))
        lazy = _sys_umount(target, MNT_DETACH)
        if lazy and is_mounted(target):
            raise MountError(f"umount (lazy) {target}: {_describe(lazy)}")


def _unescape(field: str) -> str:
    """Undo the octal escapes of /proc/self/mountinfo (space, tab, newline, backslash)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mountinfo(target: Path) -> tuple[str, set[str]] | None:
    """(fstype, per-mount and superblock options) of the top mount at `target`, or None."""
    want = os.path.realpath(target)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found: tuple[str, set[str]] | None = None
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 5 and _unescape(fields[4]) == want:
            sep = fields.index("-")
            fstype = fields[sep + 1] if len(fields) > sep + 1 else ""
            super_opts = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
            found = fstype, set(fields[5].split(",")) | set(super_opts)  # the last (top) wins
    return found


def mount_options(target: Path) -> set[str] | None:
    """The per-mount and superblock options of the mount at `target`, None when not mounted."""
    info = _mountinfo(target)
    return info[1] if info else None


def mount_fstype(target: Path) -> str | None:
    """The filesystem type of the mount at `target`, None when not mounted."""
    info = _mountinfo(target)
    return info[0] if info else None


def is_mounted(target: Path) -> bool:
    """Whether something is mounted exactly at `target`."""
    return _mountinfo(target) is not None
