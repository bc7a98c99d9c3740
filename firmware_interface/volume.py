"""Safe reading of a recorder volume (SPEC 5 layout). The volume is hostile input."""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from firmware_interface.base import (
    ClipEntry,
    ClipMissing,
    Identity,
    Listing,
    RecorderError,
    RecorderGone,
    Status,
    media_type_of,
)
from firmware_interface.findings import Finding, fault, warning
from firmware_interface.untrusted_json import UnreadableJson, loads

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
MAX_ENTRIES = 100_000
MAX_DEPTH = 8
MAX_CLIP_BYTES = 64 * 1024**3
MEDIA_DIR = "DCIM"
EVENT_LOG = "LOG/events.jsonl"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
GONE_ERRNOS = {5, 6, 19, 107, 116}  # EIO, ENXIO, ENODEV, ENOTCONN, ESTALE
# A control character (below U+0020) or a backslash: one search a name, not a loop a character
# (a recorder of 2,000 photos is listed three times a docking).
REFUSED_CHARS = re.compile(r"[\x00-\x1f\\]")


def gone_or_raise(exc: OSError) -> RecorderError:
    """Map an OSError on the volume to RecorderGone (device vanished) or a RecorderError."""
    if exc.errno in GONE_ERRNOS:
        return RecorderGone(f"recorder volume vanished: {exc.strerror}")
    if exc.errno == errno.ENOENT:
        return ClipMissing(f"recorder volume: {exc}")
    return RecorderError("io_error", f"recorder volume: {exc}")


def _open_dir_inside(root_fd: int, parts: list[str]) -> int:
    """Open a directory below root_fd one component at a time, never following a link.

    A new descriptor, the caller's to close (root_fd stays the caller's too).
    """
    fd = root_fd
    try:
        for part in parts:
            if part in ("", ".", "..") or "\x00" in part:
                raise RecorderError("path_refused", f"path component {part!r} refused")
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = nxt
        return fd if fd != root_fd else os.dup(root_fd)
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise


@dataclass
class Volume:
    """A recorder volume rooted at a directory; every access stays inside it."""

    root: Path

    def _root_fd(self) -> int:
        try:
            return os.open(self.root, DIR_FLAGS)
        except OSError as exc:
            raise gone_or_raise(exc) from exc

    def open_file(self, rel: str) -> BinaryIO:
        """Open a regular file inside the volume, refusing links and escapes."""
        parts = rel.split("/")
        root_fd = self._root_fd()
        try:
            dir_fd = _open_dir_inside(root_fd, parts[:-1])
        except OSError as exc:
            raise gone_or_raise(exc) from exc
        finally:
            os.close(root_fd)
        try:
            name = parts[-1]
            if name in ("", ".", ".."):
                raise RecorderError("path_refused", f"file name {name!r} refused")
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise gone_or_raise(exc) from exc
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RecorderError("not_regular", f"{rel} is not a regular file")
        return os.fdopen(fd, "rb")

    def unlink(self, rel: str) -> None:
        """Delete a regular file inside the volume (never through a link)."""
        parts = rel.split("/")
        root_fd = self._root_fd()
        try:
            dir_fd = _open_dir_inside(root_fd, parts[:-1])
            try:
                st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise RecorderError("not_regular", f"{rel} is not a regular file")
                os.unlink(parts[-1], dir_fd=dir_fd)
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise gone_or_raise(exc) from exc
        finally:
            os.close(root_fd)

    def read_small(self, rel: str, limit: int) -> bytes | None:
        """A small file's bytes, None when absent; RecorderError when larger than `limit`."""
        try:
            fh = self.open_file(rel)
        except RecorderError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        with fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise RecorderError("too_large", f"{rel} is larger than {limit} bytes")
        return data

    def list_media(self) -> Listing:
        """Every media file below DCIM/, with findings for what was refused."""
        listing = Listing()
        root_fd = self._root_fd()
        try:
            try:
                fd = _open_dir_inside(root_fd, [MEDIA_DIR])
            except FileNotFoundError:
                listing.findings.append(warning("no_media_dir", "recorder has no DCIM folder"))
                return listing
            except OSError as exc:
                raise gone_or_raise(exc) from exc
            _walk(fd, MEDIA_DIR, 0, listing)
        finally:
            os.close(root_fd)
        listing.clips.sort(key=lambda c: c.path)
        return listing


def _walk(dir_fd: int, rel: str, depth: int, listing: Listing) -> None:
    """Scan one directory (takes ownership of dir_fd), recursing without following links."""
    try:
        with os.scandir(dir_fd) as it:
            entries = list(it)
    except OSError as exc:
        os.close(dir_fd)
        raise gone_or_raise(exc) from exc
    try:
        for entry in entries:
            if len(listing.clips) + len(listing.findings) >= MAX_ENTRIES:
                listing.findings.append(fault("too_many_files", f"more than {MAX_ENTRIES} entries"))
                return
            _visit(dir_fd, rel, entry, depth, listing)
    finally:
        os.close(dir_fd)


def _visit(dir_fd: int, rel: str, entry: os.DirEntry[str], depth: int, listing: Listing) -> None:
    path = f"{rel}/{entry.name}"
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as exc:
        listing.findings.append(warning("unreadable_file", f"{shown}: {exc.strerror}", path=shown))
        return
    if _refused_name(entry.name, shown, listing):
        return
    if stat.S_ISLNK(st.st_mode):
        listing.findings.append(
            warning("symlink_refused", f"{shown} is a link; not followed", path=shown)
        )
    elif stat.S_ISDIR(st.st_mode):
        _descend(dir_fd, path, entry.name, depth, listing)
    elif not stat.S_ISREG(st.st_mode):
        listing.findings.append(
            warning("not_regular", f"{shown} is not a regular file", path=shown)
        )
    else:
        _add_file(path, shown, st, listing)


def _refused_name(name: str, shown: str, listing: Listing) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        listing.findings.append(warning("bad_file_name", f"{shown}: name is not UTF-8", path=shown))
        return True
    if REFUSED_CHARS.search(name):
        listing.findings.append(
            warning("bad_file_name", f"{shown}: control characters", path=shown)
        )
        return True
    return False


def _descend(dir_fd: int, path: str, name: str, depth: int, listing: Listing) -> None:
    if depth + 1 > MAX_DEPTH:
        listing.findings.append(warning("too_deep", f"{path}: nested too deep; skipped", path=path))
        return
    try:
        sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        listing.findings.append(warning("unreadable_file", f"{path}: {exc.strerror}", path=path))
        return
    _walk(sub, path, depth + 1, listing)


def _add_file(path: str, shown: str, st: os.stat_result, listing: Listing) -> None:
    media_type = media_type_of(path)
    if media_type is None:
        return  # thumbnails, index files of the recorder's own: not evidence media
    if st.st_size == 0:
        listing.findings.append(fault("zero_byte_file", f"{shown} is empty (0 bytes)", path=shown))
    elif st.st_size > MAX_CLIP_BYTES:
        listing.findings.append(fault("huge_file", f"{shown}: {st.st_size} bytes", path=shown))
    else:
        listing.clips.append(ClipEntry(path, st.st_size, st.st_mtime, media_type))


# ---- recorder.json ---------------------------------------------------------------------------

IDENTITY_FIELDS = ("model", "firmware", "officer_id", "officer_name", "unit_no", "unit_name")


def read_recorder_json(volume: Volume) -> tuple[dict[str, Any], list[Finding]]:
    """recorder.json as a dict (empty when unreadable) and findings about it."""
    try:
        raw = volume.read_small("recorder.json", MAX_JSON_BYTES)
    except RecorderGone:
        raise
    except RecorderError as exc:
        return {}, [fault("bad_recorder_json", f"recorder.json: {exc}")]
    if raw is None:
        return {}, [fault("no_recorder_json", "recorder.json is missing")]
    try:
        data, repairs = loads(raw, salvage=True)
    except UnreadableJson as exc:
        return {}, [fault("bad_recorder_json", f"recorder.json is not valid JSON: {exc}")]
    if not isinstance(data, dict):
        return {}, [fault("bad_recorder_json", "recorder.json is not a JSON object")]
    findings = [warning("recorder_json_repaired", f"recorder.json: {r}") for r in repairs]
    return data, findings


def identity_from(data: dict[str, Any]) -> Identity:
    """Identity from recorder.json; RecorderError when there is no usable device_id."""
    device_id = data.get("device_id")
    if not isinstance(device_id, str) or not _safe_id(device_id):
        raise RecorderError("bad_device_id", f"device_id {device_id!r} is missing or unsafe")
    fields = {k: str(data[k])[:128] for k in IDENTITY_FIELDS if isinstance(data.get(k), str | int)}
    return Identity(device_id=device_id, **fields)


def _safe_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value) and value.isascii()


def number_or_none(data: dict[str, Any], key: str) -> float | None:
    """A numeric field, None when absent or not a number (policy judges the range)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)  # an int beyond a double is infinite here
    return number if math.isfinite(number) else None


def status_from(data: dict[str, Any], clock: datetime | None, used_bytes: int) -> Status:
    """Status from recorder.json and the volume's contents."""
    total = number_or_none(data, "storage_total_bytes")
    total_i = int(total) if total is not None and total >= 0 else None
    free = max(total_i - used_bytes, 0) if total_i is not None else None
    faults = data.get("faults")
    return Status(
        battery_pct=number_or_none(data, "battery_pct"),
        charging=bool(data.get("charging", True)),
        storage_total_bytes=total_i,
        storage_free_bytes=free,
        clock=clock,
        faults=tuple(str(f)[:128] for f in faults[:32]) if isinstance(faults, list) else (),
    )
