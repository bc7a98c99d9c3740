"""A recorder volume is hostile input: findings, never crashes, never escapes the volume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_interface.base import ClipEntry, RecorderError
from firmware_interface.simulated import SimulatedRecorder
from firmware_interface.volume import Volume

UTC = ZoneInfo("UTC")


def recorder_dir(tmp_path: Path, meta: object | str) -> Path:
    root = tmp_path / "rec"
    (root / "DCIM" / "100MEDIA").mkdir(parents=True)
    text = meta if isinstance(meta, str) else json.dumps(meta)
    (root / "recorder.json").write_text(text)
    return root


GOOD = {
    "device_id": "ZFY0012345",
    "officer_id": "012345",
    "battery_pct": 64,
    "storage_total_bytes": 1000000,
}


def test_symlinks_are_findings_and_never_followed(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    media = root / "DCIM" / "100MEDIA"
    (media / "GOOD.MP4").write_bytes(b"x" * 100)
    os.symlink("/etc/passwd", media / "PASSWD.MP4")
    os.symlink("/etc", root / "DCIM" / "ESCAPE")
    listing = SimulatedRecorder(root, UTC).list_clips()
    assert [c.path for c in listing.clips] == ["DCIM/100MEDIA/GOOD.MP4"]
    codes = sorted(f.code for f in listing.findings)
    assert codes == ["symlink_refused", "symlink_refused"]


def test_open_refuses_dotdot_and_links_even_if_asked(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    os.symlink("/etc/passwd", root / "DCIM" / "L.MP4")
    rec = SimulatedRecorder(root, UTC)
    for path in ("DCIM/../../etc/passwd", "DCIM/L.MP4", "../recorder.json", "/etc/passwd"):
        with pytest.raises(RecorderError):
            rec.open_clip(ClipEntry(path, 1, 0.0, "video"))


def test_zero_byte_and_non_media_files(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    media = root / "DCIM" / "100MEDIA"
    (media / "EMPTY.MP4").write_bytes(b"")
    (media / "THUMBS.DB").write_bytes(b"junk")
    (media / "A.JPG").write_bytes(b"\xff\xd8jpeg")
    os.mkfifo(media / "FIFO.MP4")
    listing = SimulatedRecorder(root, UTC).list_clips()
    assert [c.path for c in listing.clips] == ["DCIM/100MEDIA/A.JPG"]
    assert sorted(f.code for f in listing.findings) == ["not_regular", "zero_byte_file"]


@pytest.mark.parametrize(
    "meta, code",
    [
        ("{not json", "bad_recorder_json"),
        ("[1, 2]", "bad_recorder_json"),
        ("x" * 70000, "bad_recorder_json"),
    ],
)
def test_malformed_recorder_json_is_a_finding(tmp_path: Path, meta: str, code: str) -> None:
    rec = SimulatedRecorder(recorder_dir(tmp_path, meta), UTC)
    with pytest.raises(RecorderError):
        rec.identity()
    assert rec.identity_findings()[0].code == code


def test_unsafe_device_id_refused(tmp_path: Path) -> None:
    rec = SimulatedRecorder(recorder_dir(tmp_path, {**GOOD, "device_id": "../../etc"}), UTC)
    with pytest.raises(RecorderError, match="device_id"):
        rec.identity()


def test_impossible_values_are_reported_as_is_for_policy(tmp_path: Path) -> None:
    meta = {**GOOD, "battery_pct": 250, "storage_total_bytes": "lots", "clock_offset_s": -1.8e9}
    status = SimulatedRecorder(recorder_dir(tmp_path, meta), UTC).status()
    assert status.battery_pct == 250
    assert status.storage_total_bytes is None
    assert status.clock is not None and status.clock.year < 1980


def test_malformed_event_log_lines_are_skipped_with_findings(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    (root / "LOG").mkdir()
    (root / "LOG" / "events.jsonl").write_text(
        '{"ts": "2026-11-21T09:14:03", "event": "rec_stop", "reason": "low_battery"}\n'
        "garbage\n"
        '{"ts": "yesterday", "event": "mark"}\n'
        '{"ts": "2026-11-21T09:20:00", "event": "power_on"}\n'
    )
    log = SimulatedRecorder(root, UTC).read_events()
    assert [e.event for e in log.events] == ["rec_stop", "power_on"]
    assert log.events[0].fields == {"reason": "low_battery"}
    assert [f.detail["line"] for f in log.findings] == [2, 3]


def test_volume_paths_with_control_characters_refused(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    (root / "DCIM" / "BAD\nNAME.MP4").write_bytes(b"x")
    listing = Volume(root).list_media()
    assert listing.clips == [] and listing.findings[0].code == "bad_file_name"
