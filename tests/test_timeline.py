"""Timeline analysis: gaps with causes from the event log, back-to-back, overlaps, marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.analysis.timeline import TimelineClip, TimelinePolicy, analyse
from agent.media import probe
from agent.timebase import recorder_to_true
from firmware_interface.base import RecorderEvent
from tests.media import FFMPEG, make_video, make_video_with_jump

TZ = ZoneInfo("Asia/Shanghai")
OFFSET_S = 47.0  # the recorder runs 47 s fast
POLICY = TimelinePolicy(gap_threshold_s=2.0, session_break_s=900.0)
T0 = datetime(2026, 11, 21, 9, 0, 0)  # recorder local time
to_true = recorder_to_true(TZ, OFFSET_S)
needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason="ffmpeg is not installed")


def clip_at(local_start: datetime, seconds: float, sha: str, **kw: Any) -> TimelineClip:
    """A clip starting at a recorder-local time, lasting `seconds`."""
    start = to_true(local_start)
    return TimelineClip(sha, start, start + timedelta(seconds=seconds), "ZFY0012345", sha, **kw)


def real_clip(path: Path, local_start: datetime, sha: str) -> TimelineClip:
    """A clip whose end comes from probing a real file."""
    result = probe(path, "video")
    assert result.duration_s is not None
    return clip_at(local_start, result.duration_s, sha, interruptions=result.interruptions)


def ev(local: datetime, event: str, **fields: Any) -> RecorderEvent:
    """A recorder event at a local time."""
    return RecorderEvent(local, event, fields)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s H.264 clip."""
    return make_video(tmp_path_factory.mktemp("tl") / "a.mp4", seconds=2, size="160x120")


@needs_ffmpeg
def test_pause_after_low_battery_stop_is_one_gap_note(video: Path) -> None:
    first = real_clip(video, T0, "a" * 64)
    second = real_clip(video, T0 + timedelta(seconds=92), "b" * 64)
    events = [
        ev(T0, "rec_start"),
        ev(T0 + timedelta(seconds=2), "rec_stop", reason="low_battery"),
        ev(T0 + timedelta(seconds=92), "rec_start"),
    ]
    result = analyse([second, first], events, to_true, POLICY)
    assert len(result.notes) == 1
    note = result.notes[0]
    assert (note.type, note.cause, note.device_id) == ("gap", "low_battery", "ZFY0012345")
    assert note.duration_s == pytest.approx(90, abs=1)
    assert note.clips == ("a" * 64, "b" * 64)
    assert note.start == first.end and note.start.utcoffset() == timedelta(0)
    assert note.start == datetime(2026, 11, 21, 1, 0, 2, tzinfo=UTC) - timedelta(seconds=47)
    assert result.flags == {"a" * 64: {"gap_after"}, "b" * 64: {"gap_before"}}
    assert result.findings == []


@needs_ffmpeg
def test_back_to_back_segments_make_no_note(video: Path) -> None:
    clips = [real_clip(video, T0 + timedelta(seconds=2 * i), f"{i}" * 64) for i in range(4)]
    result = analyse(clips, [ev(T0, "rec_start")], to_true, POLICY)
    assert result.notes == []
    assert all(flags == set() for flags in result.flags.values())


@needs_ffmpeg
def test_jump_inside_a_clip_is_an_interruption_note(tmp_path: Path) -> None:
    clip = real_clip(make_video_with_jump(tmp_path / "j.mp4"), T0, "c" * 64)
    result = analyse([clip], [], to_true, POLICY)
    assert [n.type for n in result.notes] == ["interruption"]
    note = result.notes[0]
    assert note.start == clip.start + timedelta(seconds=2)
    assert note.duration_s == pytest.approx(5.0, abs=0.1)
    assert (note.clips, note.cause) == (("c" * 64,), "unknown")


@pytest.mark.parametrize(
    ("events", "cause"),
    [
        ([ev(T0 + timedelta(seconds=11), "power_off")], "power_off"),
        ([ev(T0 + timedelta(seconds=9), "rec_stop", reason="storage_full")], "storage_full"),
        (
            [
                ev(T0 + timedelta(seconds=10), "rec_stop", reason="manual"),
                ev(T0 + timedelta(seconds=11), "power_off"),
            ],
            "manual",
        ),
        ([ev(T0 + timedelta(seconds=40), "rec_stop", reason="overheat")], "unknown"),
        ([ev(T0 + timedelta(seconds=10), "rec_stop", reason="gremlins")], "unknown"),
        ([ev(T0 + timedelta(seconds=10), "rec_stop")], "unknown"),
        ([], "unknown"),
    ],
)
def test_cause_comes_from_the_event_near_the_end(events: list[RecorderEvent], cause: str) -> None:
    clips = [clip_at(T0, 10, "a"), clip_at(T0 + timedelta(seconds=30), 10, "b")]
    result = analyse(clips, events, to_true, POLICY)
    assert [(n.type, n.cause) for n in result.notes] == [("gap", cause)]


def test_pause_longer_than_a_session_break_is_no_gap() -> None:
    clips = [clip_at(T0, 10, "a"), clip_at(T0 + timedelta(hours=2), 10, "b")]
    result = analyse(clips, [], to_true, POLICY)
    assert result.notes == [] and result.flags == {"a": set(), "b": set()}


def test_clip_starting_before_the_previous_ended_is_an_overlap() -> None:
    clips = [clip_at(T0, 60, "a"), clip_at(T0 + timedelta(seconds=30), 60, "b")]
    events = [ev(T0 + timedelta(seconds=31), "clock_set")]
    result = analyse(clips, events, to_true, POLICY)
    assert [(n.type, n.duration_s, n.clips, n.cause) for n in result.notes] == [
        ("overlap", 30.0, ("a", "b"), "clock_set")
    ]


def test_gap_is_measured_from_the_latest_end_so_far() -> None:
    clips = [
        clip_at(T0, 100, "long"),
        clip_at(T0 + timedelta(seconds=10), 5, "inside"),
        clip_at(T0 + timedelta(seconds=100), 5, "next"),
    ]
    result = analyse(clips, [], to_true, POLICY)
    assert [n.type for n in result.notes] == ["overlap"]  # "inside" lies within "long"


def test_mark_during_a_clip_flags_it() -> None:
    clips = [clip_at(T0, 10, "a"), clip_at(T0 + timedelta(seconds=10), 10, "b")]
    result = analyse(clips, [ev(T0 + timedelta(seconds=15), "mark")], to_true, POLICY)
    assert result.flags == {"a": set(), "b": {"marked"}}


def test_malformed_events_do_not_stop_analysis() -> None:
    clips = [clip_at(T0, 10, "a"), clip_at(T0 + timedelta(seconds=30), 10, "b")]
    events: list[Any] = [
        RecorderEvent(None, "rec_stop", {"reason": "manual"}),  # type: ignore[arg-type]
        RecorderEvent(T0, 42, {}),  # type: ignore[arg-type]
        {"ts": "2026-11-21T09:00:10", "event": "rec_stop"},
        "garbage",
        RecorderEvent(datetime.min, "power_off", {}),  # overflows when converted
        RecorderEvent(T0 + timedelta(seconds=10), "rec_stop", None),  # type: ignore[arg-type]
        RecorderEvent(T0 + timedelta(seconds=10), "rec_stop", {"reason": ["low_battery"]}),
        ev(T0 + timedelta(seconds=10), "rec_stop", reason="low_battery"),
    ]
    result = analyse(clips, events, to_true, POLICY)
    assert [(n.type, n.cause) for n in result.notes] == [("gap", "low_battery")]
    assert [f.code for f in result.findings] == ["event_unreadable"] * 5


def test_recorder_time_converts_local_minus_offset() -> None:
    convert = recorder_to_true(TZ, 47.0)
    assert convert(datetime(2026, 11, 21, 9, 0, 47)) == datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
