"""The mass-storage driver: a recorder volume on a block device, mounted read-only.

Clock: a plain volume has no live clock. A time written into recorder.json is a snapshot of
unknown age (when the file was last written), not a reading, so it is never reported as the
clock: capabilities say read_clock=False, set_clock=False, and status().clock is None.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from firmware_interface import mount
from firmware_interface.base import (
    Capabilities,
    ClipEntry,
    EventLog,
    Identity,
    Listing,
    RecorderError,
    RecorderGone,
    Status,
)
from firmware_interface.directio import DirectFile
from firmware_interface.event_log import read_event_log
from firmware_interface.findings import Finding
from firmware_interface.volume import (
    Volume,
    gone_or_raise,
    identity_from,
    read_recorder_json,
    status_from,
)

logger = logging.getLogger(__name__)


class GuardedReader(io.RawIOBase):
    """A clip file whose read errors on a vanished device surface as RecorderGone."""

    def __init__(self, fh: BinaryIO, on_gone: Callable[[], None]) -> None:
        # Take the raw file out of its buffer, so that the bytes are buffered once only.
        self._fh: Any = fh.detach() if isinstance(fh, io.BufferedReader) else fh
        self._on_gone = on_gone

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into `buffer`, mapping EIO/ENODEV/ENXIO to RecorderGone."""
        try:
            return int(self._fh.readinto(buffer))
        except OSError as exc:
            raise self._gone(exc) from exc

    def direct_source(self) -> DirectFile | None:
        """The clip reopened with O_DIRECT for a large copy, its read errors mapped the same."""
        return DirectFile.reopen(self._fh.fileno(), self._gone)

    def _gone(self, exc: OSError) -> BaseException:
        err = gone_or_raise(exc)
        if isinstance(err, RecorderGone):
            self._on_gone()
        return err

    def fileno(self) -> int:
        """The clip's descriptor (the store uses it for read-ahead hints)."""
        return int(self._fh.fileno())

    def close(self) -> None:
        """Close the underlying file."""
        self._fh.close()
        super().close()


class MassStorageRecorder:
    """A recorder volume mounted read-only at `mount_point` from block device `device`."""

    capabilities = Capabilities(read_clock=False, set_clock=False, delete=True, event_log=True)

    def __init__(
        self, device: str, mount_point: Path, bay: int, wall_clock_tz: ZoneInfo | None = None
    ) -> None:
        self.device = device
        self.mount_point = mount_point
        self.bay = bay
        # FAT keeps file times as the recorder's wall clock, without a zone: mounted tz=UTC,
        # they read as that wall clock in UTC and are put back into the recorder's zone.
        self.wall_clock_tz = wall_clock_tz
        self.utc_offset_min: int | None = None  # given at mount, given again at each remount
        self.volume = Volume(mount_point)
        self._findings: list[Finding] = []
        self._lock = threading.RLock()
        self._closed = False
        self._device_id = ""  # known once identity() has been read, for log lines

    @classmethod
    def mount(
        cls, device: str, mount_point: Path, bay: int, fstype: str, tz: ZoneInfo | None = None
    ) -> MassStorageRecorder:
        """Mount `device` read-only on `mount_point` and return the recorder on it.

        `tz` is the recorders' zone: file times on a FAT volume are wall-clock times in it.
        """
        offset = utc_offset_min(tz)
        driver = mount.mount_ro(device, mount_point, fstype, offset)
        logger.info(
            "bay %s: mounted %s (%s) read-only on %s",
            bay,
            device,
            driver,
            mount_point,
            extra={"BAY": bay, "DEVICE": device},
        )
        recorder = cls(device, mount_point, bay, tz if driver in mount.WALL_CLOCK_FS else None)
        recorder.utc_offset_min = offset
        return recorder

    def _live(self) -> Volume:
        if self._closed:
            raise RecorderGone(f"recorder volume {self.device} was released")
        return self.volume

    def _guard(self, exc: RecorderGone) -> RecorderGone:
        """Release the mount of a vanished device so the kernel can let it go."""
        self.device_gone()
        return exc

    def _data(self) -> dict[str, Any]:
        try:
            data, self._findings = read_recorder_json(self._live())
        except RecorderGone as exc:
            raise self._guard(exc) from exc
        return data

    def identity(self) -> Identity:
        """Identity from recorder.json on the volume."""
        identity = identity_from(self._data())
        self._device_id = identity.device_id
        return identity

    def identity_findings(self) -> list[Finding]:
        """Findings from the last read of recorder.json."""
        return list(self._findings)

    def status(self) -> Status:
        """Battery as recorder.json says, storage from statvfs of the mount, clock unknown."""
        status = status_from(self._data(), None, 0)
        total, free = self.storage()
        return Status(status.battery_pct, status.charging, total, free, None, status.faults)

    def storage(self) -> tuple[int, int]:
        """(total, free) bytes of the mounted volume."""
        try:
            st = os.statvfs(self._live().root)
        except OSError as exc:
            raise self._guard_os(exc) from exc
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def _guard_os(self, exc: OSError) -> RecorderError:
        err = gone_or_raise(exc)
        if isinstance(err, RecorderGone):
            self.device_gone()
        return err

    def set_clock(self, now: datetime) -> None:
        """A plain volume has no clock to set."""
        raise RecorderError("clock_unsupported", "a mass-storage recorder's clock cannot be set")

    def list_clips(self) -> Listing:
        """Every media file under DCIM/ (lost+found and other non-media are ignored)."""
        try:
            listing = self._live().list_media()
        except RecorderGone as exc:
            raise self._guard(exc) from exc
        tz = self.wall_clock_tz
        if tz is not None:
            listing.clips = [replace(c, mtime=wall_clock_epoch(c.mtime, tz)) for c in listing.clips]
        return listing

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        """Open a clip read-only; a vanished device mid-read raises RecorderGone."""
        try:
            fh = self._live().open_file(clip.path)
        except RecorderGone as exc:
            raise self._guard(exc) from exc
        return io.BufferedReader(GuardedReader(fh, self.device_gone), 1024 * 1024)

    def delete_clip(self, clip: ClipEntry) -> None:
        """Remount read-write, unlink the clip, sync, remount read-only."""
        with self._lock:
            volume = self._live()
            mount.remount(self.mount_point, writable=True, utc_offset_min=self.utc_offset_min)
            try:
                volume.unlink(clip.path)
                os.sync()
            finally:
                mount.remount(self.mount_point, writable=False, utc_offset_min=self.utc_offset_min)
        logger.info(
            "bay %s: deleted %s from the recorder",
            self.bay,
            clip.path,
            extra={"BAY": self.bay, "DEVICE": self.device, "DEVICE_ID": self._device_id},
        )

    def read_events(self) -> EventLog:
        """LOG/events.jsonl."""
        try:
            return read_event_log(self._live())
        except RecorderGone as exc:
            raise self._guard(exc) from exc

    def device_gone(self) -> None:
        """The device vanished: detach the mount now (lazily) so the kernel can release it."""
        logger.warning(
            "bay %s: %s vanished; releasing its mount",
            self.bay,
            self.device,
            extra={"BAY": self.bay, "DEVICE": self.device},
        )
        self.close()

    def close(self) -> None:
        """Unmount (lazily when busy); safe to call more than once, from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                mount.unmount(self.mount_point)
            except RecorderError as exc:
                logger.error("bay %s: %s", self.bay, exc, extra={"BAY": self.bay})


def wall_clock_epoch(mtime: float, tz: ZoneInfo) -> float:
    """The true time of a FAT file time read as UTC (mounted tz=UTC): it was `tz` wall clock."""
    wall = datetime.fromtimestamp(mtime, UTC).replace(tzinfo=None)
    return wall.replace(tzinfo=tz).timestamp()


def utc_offset_min(tz: ZoneInfo | None) -> int | None:
    """The zone's offset from UTC now, in minutes (exFAT's time_offset), or None."""
    if tz is None:
        return None
    offset = datetime.now(tz).utcoffset()
    return None if offset is None else int(offset.total_seconds() // 60)
