"""A clip's start time (agent.evidence.clip_time): name, container header, mtime; one answer."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.evidence.clip_time import span, start_time
from agent.media.container import declared_beyond_eof, iter_boxes, movie_header
from firmware_interface.base import ClipEntry
from tests.media import FFMPEG, make_video, truncate_copy

TZ = ZoneInfo("Asia/Shanghai")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


def entry(path: Path, mtime: float, media: str = "video") -> ClipEntry:
    return ClipEntry(path.name, path.stat().st_size if path.exists() else 0, mtime, media)


def clear_creation_time(path: Path) -> None:
    """Zero the creation and modification times of the file's `mvhd` (the MP4 way of "none")."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, 2)
        moov = next(b for b in iter_boxes(fh, 0, size) if b.kind == b"moov")
        mvhd = next(b for b in iter_boxes(fh, moov.body, moov.end) if b.kind == b"mvhd")
        fh.seek(mvhd.body)  # version (1 byte), flags (3), then the two times
        width = 8 if fh.read(1) == b"\x01" else 4
        fh.seek(mvhd.body + 4)
        fh.write(bytes(2 * width))


def never_opened() -> object:
    raise AssertionError("a parsed name needs no bytes")


def test_a_parsed_name_is_local_recorder_time_minus_the_clock_offset(tmp_path: Path) -> None:
    clip = ClipEntry("ZFY001_012345_20261121091403_0001.MP4", 10, 0.0, "video")
    got = start_time(clip, TZ, 47.0, never_opened)  # type: ignore[arg-type]
    assert got.source == "name"
    assert got.start == datetime(2026, 11, 21, 1, 13, 16, tzinfo=UTC)


@needs_ffmpeg
def test_unparsed_name_takes_the_mp4_creation_time_ffmpeg_wrote(tmp_path: Path) -> None:
    path = tmp_path / "clip.MP4"
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:duration=2",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-metadata", "creation_time=2026-11-20T08:00:00Z", str(path)],
        check=True,
    )  # fmt: skip
    got = start_time(entry(path, 0.0), TZ, 10.0, lambda: open(path, "rb"))
    assert got.source == "container"
    assert got.start == datetime(2026, 11, 20, 7, 59, 50, tzinfo=UTC)


@needs_ffmpeg
def test_unparsed_name_without_creation_time_is_mtime_minus_the_header_duration(
    tmp_path: Path,
) -> None:
    path = make_video(tmp_path / "clip.MP4", seconds=3.0, audio=False)
    clear_creation_time(path)  # some ffmpeg builds stamp the encode time: a recorder may not
    with open(path, "rb") as fh:
        header = movie_header(fh)
    assert header is not None and header.created is None
    assert header.duration_s == pytest.approx(3.0, abs=0.1)
    written = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    got = start_time(entry(path, written.timestamp()), TZ, None, lambda: open(path, "rb"))
    assert got.source == "mtime"
    assert abs((written - got.start).total_seconds() - 3.0) < 0.1


def test_unreadable_source_falls_back_to_mtime(tmp_path: Path) -> None:
    def broken() -> object:
        raise OSError("gone")

    written = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    clip = ClipEntry("odd name.MP4", 5, written.timestamp(), "video")
    got = start_time(clip, TZ, None, broken)  # type: ignore[arg-type]
    assert (got.source, got.start) == ("mtime", written)


def test_span_adds_the_end_and_keeps_the_start() -> None:
    record = {"recorded_start": "2026-11-21T09:00:00+08:00", "start_source": "mtime"}
    assert span(record, 90.0) == {"recorded_end": "2026-11-21T09:01:30+08:00"}
    assert span(record, None) == {}


@needs_ffmpeg
def test_one_box_walker_tells_a_cut_file(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.MP4", seconds=2.0, audio=False)
    cut = truncate_copy(whole, tmp_path / "cut.MP4", 0.5)
    assert declared_beyond_eof(whole) is False
    assert declared_beyond_eof(cut) is True
    hostile = tmp_path / "hostile.MP4"
    hostile.write_bytes(b"\x00\x00\x00\x04\xff\xfe\xfd\xfc" * 4)
    assert declared_beyond_eof(hostile) is None
    os.truncate(hostile, 0)
    assert declared_beyond_eof(hostile) is False
    with open(hostile, "rb") as fh:
        assert movie_header(fh) is None


def test_creation_before_2000_is_not_believed(tmp_path: Path) -> None:
    path = tmp_path / "zero.MP4"
    # moov > mvhd v0 with creation 1 s after 1904 and 600 units at 600/s
    mvhd = b"\x00\x00\x00\x00" + (1).to_bytes(4, "big") + b"\x00" * 4 + (600).to_bytes(4, "big")
    mvhd += (600).to_bytes(4, "big") + b"\x00" * 80
    box = (8 + len(mvhd)).to_bytes(4, "big") + b"mvhd" + mvhd
    path.write_bytes((8 + len(box)).to_bytes(4, "big") + b"moov" + box)
    written = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    got = start_time(entry(path, written.timestamp()), TZ, None, lambda: open(path, "rb"))
    assert got.source == "mtime"
    assert got.start == written - timedelta(seconds=1.0)
