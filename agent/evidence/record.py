"""The clip record: the index row and, minus internal fields, the MANIFEST of SPEC 7."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.evidence.clip_time import StartTime
from agent.evidence.lifecycle import new_clip
from agent.timebase import iso
from firmware_interface.base import ClipEntry, Identity

MANIFEST_FIELDS = (
    "dock_id",
    "department",
    "device_id",
    "officer_id",
    "media_type",
    "file_name",
    "sha256",
    "size",
    "recorded_start",
    "recorded_end",
    "recorded_tz",
    "clock_offset_s",
    "start_source",
    "duration_s",
    "fps",
    "width",
    "height",
    "decode_ok",
    "offloaded_at",
    "flags",
    "retention_class",
    "notes",
    "custody_seq",
    "custody_hash",
)


@dataclass(frozen=True)
class Docking:
    """One recorder's stay in a bay: who it is and what its clock was found to be."""

    docking_id: str
    bay: int
    identity: Identity
    clock_offset_s: float | None
    tz: ZoneInfo
    dock_id: str
    department: str
    recorder_resolution: str | None = None  # "1920x1080" where the recorder reports it


def dest_rel(docking: Docking, start: datetime, clip: ClipEntry) -> Path:
    """Where a clip lives in the store: {device_id}/{local date}/{file}."""
    local = start.astimezone(docking.tz)
    # isoformat: the same YYYY-MM-DD as strftime, a quarter of its cost (a photo each)
    day = local.date().isoformat() if local.year >= 1000 else local.strftime("%Y-%m-%d")
    return Path(docking.identity.device_id, day, clip.name)


def new_record(
    docking: Docking,
    clip: ClipEntry,
    sha: str,
    size: int,
    stored: Path,
    start: StartTime,
    custody: dict[str, Any],
) -> dict[str, Any]:
    """The index row of a clip just offloaded and verified."""
    ident = docking.identity
    flags = [] if start.source == "name" else ["name_unparsed"]
    return {
        "clip_id": sha,
        **new_clip(),
        "local_path": str(stored),
        "dock_id": docking.dock_id,
        "department": docking.department,
        "device_id": ident.device_id,
        "officer_id": ident.officer_id,
        "officer_name": ident.officer_name,
        "unit_no": ident.unit_no,
        "media_type": clip.media_type,
        "file_name": clip.name,
        "sha256": sha,
        "size": size,
        "recorded_start": iso(start.start, docking.tz),
        "recorded_end": iso(start.start, docking.tz),
        "recorded_tz": docking.tz.key,
        "clock_offset_s": docking.clock_offset_s,
        "start_source": start.source,
        "duration_s": None,
        "fps": None,
        "width": None,
        "height": None,
        "decode_ok": None,
        "offloaded_at": iso(datetime.now(UTC), docking.tz),
        "flags": flags,
        "retention_class": "routine",
        "notes": [],
        "custody_seq": custody["seq"],
        "custody_hash": custody["hash"],
        "bay": docking.bay,
        "docking_id": docking.docking_id,
        "recorder_path": clip.path,
        "recorder_mtime": clip.mtime,
        "held": False,
        "synced_at": None,
        "purged_at": None,
        "recorder_resolution": docking.recorder_resolution,
    }


def custody_items(
    docking: Docking, clip: ClipEntry, sha256: str, size: int, local_path: Path
) -> list[tuple[str, dict[str, Any]]]:
    """The two custody entries of one stored clip: offloaded, then verified."""
    device = docking.identity.device_id
    offloaded = {
        "device_id": device,
        "file": clip.path,
        "sha256": sha256,
        "size": size,
        "bay": docking.bay,
        "local_path": str(local_path),
    }
    verified = {"device_id": device, "sha256": sha256, "size": size}
    return [("clip_offloaded", offloaded), ("clip_verified", verified)]


def manifest(record: dict[str, Any]) -> dict[str, Any]:
    """The SPEC 7 MANIFEST of a clip record, with recorder_resolution where it is known."""
    data = {k: record.get(k) for k in MANIFEST_FIELDS}
    if record.get("recorder_resolution"):
        data["recorder_resolution"] = record["recorder_resolution"]
    return data
