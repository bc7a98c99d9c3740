"""A recorder volume is hostile input: findings, never crashes, never escapes the volume."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_interface import simkit
from firmware_interface.base import ClipEntry, EventLog, RecorderError, RecorderGone
from firmware_interface.event_log import read_events_of
from firmware_interface.simulated import SimulatedRecorder
from firmware_interface.volume import Volume
from tests.dock import dock_config, running, settled, wait_for

UTC = ZoneInfo("UTC")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


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


VALID = b'{"ts": "2026-11-21T09:14:03", "event": "rec_start"}\n'
LAST = b'{"ts": "2026-11-21T09:20:00", "event": "power_off"}\n'


def write_log(root: Path, *lines: bytes) -> Path:
    log = root / "LOG" / "events.jsonl"
    log.parent.mkdir(exist_ok=True)
    log.write_bytes(b"".join(lines))
    return log


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b"[" * 5000, "bad_event_line", "nested deeper than 16"),
        (
            b'{"ts": "2026-11-21T09:15:00", "event": "mark", "x": ' + b'{"a": ' * 5000,
            "bad_event_line",
            "nested",
        ),
        (b'{"ts": "2026-11-21T09:15:00", "event": "m\xff\xfe"}', "bad_event_line", "not UTF-8"),
        (b'{"ts": NaN, "event": "mark"}', "bad_event_line", "ts is not a timestamp"),
        (b'{"ts": "2026-11-21T09:15:00", "event": 1e999}', "bad_event_line", "event is not"),
        (b'{"ts": "99999-01-01T00:00:00", "event": "mark"}', "bad_event_line", "skipped"),
        (
            b'{"ts": "2026-11-21T09:15:00", "event": "mark", "n": ' + b"9" * 5000 + b"}",
            "event_line_repaired",
            "number(s) out of range",
        ),
    ],
)
def test_hostile_event_lines_are_findings_and_the_rest_is_read(
    tmp_path: Path, line: bytes, code: str, words: str
) -> None:
    root = recorder_dir(tmp_path, GOOD)
    write_log(root, VALID, line + b"\n", LAST)
    log = SimulatedRecorder(root, UTC).read_events()
    kept = ["rec_start", "mark", "power_off"] if code == "event_line_repaired" else None
    assert [e.event for e in log.events] == (kept or ["rec_start", "power_off"])
    (finding,) = log.findings
    assert finding.code == code and words in finding.message and finding.detail["line"] == 2


def test_an_overlong_line_is_skipped_and_the_lines_after_it_read(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    write_log(root, VALID, b"x" * 3_000_000 + b"\n", LAST)
    log = SimulatedRecorder(root, UTC).read_events()
    assert [e.event for e in log.events] == ["rec_start", "power_off"]
    assert [f.message for f in log.findings] == [
        "LOG/events.jsonl line 2 skipped: longer than 65536 bytes"
    ]


def test_a_line_of_100_mb_stops_the_read_at_16_mib_with_findings(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    log_path = write_log(root, VALID)
    with open(log_path, "r+b") as fh:  # a sparse 100 MB line of NUL bytes: cheap to make
        fh.seek(100 * 1024 * 1024, os.SEEK_END)
        fh.write(b"\n" + LAST)
    log = SimulatedRecorder(root, UTC).read_events()
    assert [e.event for e in log.events] == ["rec_start"]
    assert [f.code for f in log.findings] == ["bad_event_line", "bad_event_log"]
    assert "not read beyond 16777216 bytes" in log.findings[1].message


def test_a_log_of_bad_lines_is_a_few_findings_and_read_no_further(tmp_path: Path) -> None:
    root = recorder_dir(tmp_path, GOOD)
    write_log(root, VALID, b"[\n" * 999, LAST, b"[\n" * 8_000_000, LAST)  # 16 MB of bad lines
    log = SimulatedRecorder(root, UTC).read_events()
    assert [e.event for e in log.events] == ["rec_start", "power_off"]
    assert [f.message for f in log.findings[-2:]] == [
        "LOG/events.jsonl: not read beyond 1000 bad lines",
        "LOG/events.jsonl: 980 more bad lines",
    ]
    assert len(log.findings) == 22


def test_hostile_recorder_json_values_are_findings_and_identity_survives(tmp_path: Path) -> None:
    text = json.dumps(GOOD)[:-1] + (
        ', "battery_pct": NaN, "storage_total_bytes": 1e999, "clock_offset_s": 1e300, '
        '"charge_pct_per_min": ' + "9" * 5000 + ', "officer_name": "\\ud800", '
        '"faults": ' + "[" * 5000 + "]" * 5000 + "}"
    )
    rec = SimulatedRecorder(recorder_dir(tmp_path, text), UTC)
    assert rec.identity().device_id == "ZFY0012345"
    findings = rec.identity_findings()
    assert {f.code for f in findings} == {"recorder_json_repaired"}
    assert [f.message for f in findings] == [
        "recorder.json: 3 number(s) out of range (NaN, infinite, huge) read as null",
        "recorder.json: 1 value(s) nested deeper than 16 read as null",
        "recorder.json: 1 string(s) with invalid characters repaired",
    ]
    status = rec.status()  # 1e300 s is no clock: never OverflowError
    assert (status.battery_pct, status.storage_total_bytes, status.clock) == (None, None, None)


def test_a_recorder_with_hostile_json_docks_and_its_clips_are_analysed(tmp_path: Path) -> None:
    start = datetime.now() - timedelta(hours=2)
    mark = {"ts": f"{start + timedelta(seconds=1):{TIME_FORMAT}}", "event": "mark"}
    hostile = [
        b"[" * 5000,  # RecursionError in json.loads
        b'{"ts": "%s", "event": "mark", "x": %s}' % (mark["ts"].encode(), b'{"a": ' * 5000),
        b'{"ts": NaN, "event": "mark"}',
        b'{"ts": "2026-11-21T09:15:00", "event": "m\xff"}',
        b'{"ts": "2026-11-21T09:15:00", "event": "mark", "n": 1e999}',
        b"x" * 200_000,
        json.dumps(mark).encode(),  # after all of it, the officer's mark still counts
    ]
    rec = simkit.SimRecorder(
        clips=simkit.shift(start, [2, 2], pause_s=30),
        events_raw=b"\n".join(hostile) + b"\n",
        json_extra='"vendor": %s, "charge_pct_per_min": NaN, "officer_name": "\\ud800"'
        % ("[" * 5000 + "]" * 5000),
    )
    cfg = dock_config(tmp_path)
    originals = simkit.build(tmp_path / "bay1", rec, docked=False)
    with running(cfg) as (daemon, views):
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        view = views.latest(1)
        records = sorted(daemon.services.index.iter_all(), key=lambda r: r["file_name"])
    assert view is not None and view.state in ("charging", "ready")
    codes = [f.code for f in view.findings]
    assert "internal_error" not in codes
    assert codes.count("bad_event_line") == 5 and "event_line_repaired" in codes
    assert "recorder_json_repaired" in codes
    assert [r["file_name"] for r in records] == sorted(p.name for p in originals)
    for record in records:  # offloaded and analysed: probed, timeline done
        assert record["analysed"] is True and record["decode_ok"] is True
        assert record["duration_s"] == pytest.approx(2.0, abs=0.2)
    assert "marked" in records[0]["flags"] and "marked" not in records[1]["flags"]
    assert "gap_after" in records[0]["flags"]


class BrokenLogRecorder(SimulatedRecorder):
    """A driver whose event-log reader fails in a way no driver should."""

    def __init__(self, root: Path, error: Exception) -> None:
        super().__init__(root, UTC)
        self.error = error

    def read_events(self) -> EventLog:
        raise self.error


@pytest.mark.logs_exception(reason="a driver's bug on the event log is logged with its traceback")
def test_a_driver_failing_on_its_event_log_is_a_finding_unless_the_recorder_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = recorder_dir(tmp_path, GOOD)
    log = read_events_of(BrokenLogRecorder(root, RecursionError("deep")))
    assert log.events == [] and [f.code for f in log.findings] == ["bad_event_log"]
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert logged.exc_info and logged.exc_info[0] is RecursionError
    with pytest.raises(RecorderGone):
        read_events_of(BrokenLogRecorder(root, RecorderGone("unplugged")))
