"""Media probing: duration, frame rate, size, and whether a clip decodes whole (OpenCV)."""

from __future__ import annotations

import logging
import os
import statistics
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent.findings import Finding, info, warning
from agent.media import audio, container

logger = logging.getLogger(__name__)

TRUNCATED = "truncated"
UNDECODABLE = "undecodable"
MISSING_FRAMES_SHARE = 0.05  # fewer decoded frames than the header by more than this = cut
MIN_JUMP_S = 1.0  # a pts jump shorter than this is jitter, not an interruption
JUMP_INTERVALS = 5  # ... and so is one shorter than this many frame intervals
MAX_JPEG_SCAN = 1024 * 1024  # bytes read looking for a JPEG frame header
READ_WHOLE = 32 * 1024 * 1024  # a photo up to this size is read into memory once
TAIL = 4096  # bytes at a JPEG's end where its end-of-image marker is looked for


@dataclass
class ProbeResult:
    """What probing found about one media file."""

    duration_s: float | None = None
    fps: float | None = None
    frame_count: int | None = None
    width: int | None = None
    height: int | None = None
    decode_ok: bool | None = None
    flags: set[str] = field(default_factory=set)
    interruptions: list[tuple[float, float]] = field(default_factory=list)  # (offset_s, jump_s)
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class _Header:
    """What a video container claims about itself."""

    frames: int
    fps: float
    width: int
    height: int


def probe(path: Path, media_type: str) -> ProbeResult:
    """Probe a media file read-only; never raises on bad input, says what it found instead."""
    probers = {"video": _probe_video, "photo": _probe_photo, "audio": _probe_audio}
    prober = probers.get(media_type)
    if prober is None:
        return ProbeResult(findings=[info("probe_skipped", f"{path.name}: not a media type")])
    try:
        result = prober(Path(path).absolute())
    except Exception as exc:  # hostile input must never stop an offload
        logger.warning("probe of %s failed: %s", path, exc)
        result = _failed(path, f"could not be probed: {exc}")
    _flag_findings(path, result)
    return result


def _failed(path: Path, why: str) -> ProbeResult:
    """An undecodable result with a finding saying why."""
    result = ProbeResult(decode_ok=False, flags={UNDECODABLE})
    result.findings.append(warning("media_undecodable", f"{path.name}: {why}", file=path.name))
    return result


def _flag_findings(path: Path, result: ProbeResult) -> None:
    """Add the findings that go with truncation and interruptions."""
    if TRUNCATED in result.flags:
        result.findings.append(
            warning("media_truncated", f"{path.name}: the file ends early", file=path.name)
        )
    for offset, jump in result.interruptions:
        message = f"{path.name}: recording jumps {jump:.1f} s at {offset:.1f} s"
        result.findings.append(
            warning("media_interrupted", message, file=path.name, offset_s=offset, jump_s=jump)
        )


def _probe_video(path: Path) -> ProbeResult:
    """Open with OpenCV, read the header, decode every frame and compare."""
    import cv2

    cut = container.declared_beyond_eof(path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            return _unopened(path, cut)
        header = _read_header(cap)
        stamps = _decode_timestamps(cap)
    finally:
        cap.release()
    return _video_result(path, header, stamps, bool(cut))


def _unopened(path: Path, cut: bool | None) -> ProbeResult:
    """A video OpenCV cannot open: undecodable, and truncated when the container says so."""
    why = "ends before its index" if cut else "will not open as video"
    result = _failed(path, why)
    if cut:
        result.flags.add(TRUNCATED)
    return result


def _read_header(cap: Any) -> _Header:
    """Frame count, frame rate and size as the container states them."""
    import cv2

    return _Header(
        frames=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))),
        fps=max(0.0, float(cap.get(cv2.CAP_PROP_FPS))),
        width=max(0, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))),
        height=max(0, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))),
    )


def _decode_timestamps(cap: Any) -> array[float]:
    """Decode every frame (grab: no colour conversion) and keep each frame's time in ms."""
    import cv2

    stamps: array[float] = array("d")
    pos_msec = cv2.CAP_PROP_POS_MSEC
    while cap.grab():
        stamps.append(cap.get(pos_msec))
    return stamps


def _video_result(path: Path, header: _Header, stamps: array[float], cut: bool) -> ProbeResult:
    """Judge decoded frames against the header."""
    if not stamps:
        result = _failed(path, "no frame decodes")
        if cut:
            result.flags.add(TRUNCATED)
        return result
    interval = _frame_interval(stamps, header.fps)
    result = ProbeResult(
        duration_s=round((stamps[-1] - stamps[0]) / 1000 + interval, 3),
        fps=round(1.0 / interval, 3) if interval > 0 else header.fps or None,
        frame_count=len(stamps),
        width=header.width or None,
        height=header.height or None,
        decode_ok=True,
        interruptions=_interruptions(stamps, interval),
    )
    if cut or _missing_frames(header.frames, len(stamps)):
        result.flags.add(TRUNCATED)
    return result


def _frame_interval(stamps: array[float], fps: float) -> float:
    """The typical time between frames in seconds, from the frames themselves."""
    deltas = [b - a for a, b in zip(stamps, stamps[1:], strict=False) if b > a]
    if deltas:
        return statistics.median(deltas) / 1000
    return 1.0 / fps if fps > 0 else 0.0


def _missing_frames(header_frames: int, decoded: int) -> bool:
    """True when materially fewer frames decode than the header promises."""
    missing = header_frames - decoded
    return missing > 1 and missing > MISSING_FRAMES_SHARE * header_frames


def _interruptions(stamps: array[float], interval: float) -> list[tuple[float, float]]:
    """Timestamp discontinuities inside the clip, as (offset_s, jump_s)."""
    limit = max(MIN_JUMP_S, JUMP_INTERVALS * interval)
    found: list[tuple[float, float]] = []
    first = stamps[0]
    for prev, cur in zip(stamps, stamps[1:], strict=False):
        delta = (cur - prev) / 1000
        if abs(delta) > limit:
            offset = (prev - first) / 1000 + interval
            found.append((round(offset, 3), round(delta - interval, 3)))
    return found


def _probe_photo(path: Path) -> ProbeResult:
    """Size from the JPEG frame header, decodability from a reduced-size decode.

    A photo of up to READ_WHOLE bytes is read once and its bytes serve all three checks (the
    header, the end marker and the decode); a larger one is decoded from the file.
    """
    import cv2

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        whole = size <= READ_WHOLE
        data = fh.read(size + 1 if whole else MAX_JPEG_SCAN)  # a buffer of the file's size
        tail = data[-TAIL:] if whole else _tail(fh)
    frame = _jpeg_size(data[:MAX_JPEG_SCAN])
    complete = _jpeg_complete(tail)
    if not data:
        image = None
    elif whole:
        import numpy as np

        if not complete:  # as imread's file reader does at a premature end: an end marker
            data += b"\xff\xd9"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if image is None:
        return _failed(path, "does not decode as an image")
    if frame is None:
        height, width = image.shape[:2]
        frame = (width * 8, height * 8)  # only when the header could not be read
    result = ProbeResult(width=frame[0], height=frame[1], decode_ok=True)
    if not complete:
        result.flags.add(TRUNCATED)
    return result


def _tail(fh: BinaryIO) -> bytes:
    """The last TAIL bytes of an open file."""
    fh.seek(0, 2)
    fh.seek(max(0, fh.tell() - TAIL))
    return fh.read()


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first JPEG SOF marker in `data` (the file's start), or None."""
    at = 2 if data[:2] == b"\xff\xd8" else len(data)
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            return int.from_bytes(data[at + 7 : at + 9], "big"), height
        at += 2 + length
    return None


def _jpeg_complete(tail: bytes) -> bool:
    """True when a JPEG's last bytes end with its end-of-image marker (trailing padding allowed)."""
    return tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def _probe_audio(path: Path) -> ProbeResult:
    """Duration of WAV from its header; of AAC/MP3 by walking frames; else unknown."""
    if path.suffix.lower() == ".wav":
        duration = audio.wav_duration(path)
        result = ProbeResult(duration_s=duration, decode_ok=duration is not None)
        if duration is None:
            return _failed(path, "WAV header cannot be read")
        if container.declared_beyond_eof(path):
            result.flags.add(TRUNCATED)
        return result
    walked = audio.frames_duration(path)
    if walked is None:
        note = info("probe_unsupported", f"{path.name}: audio format not probed", file=path.name)
        return ProbeResult(decode_ok=None, findings=[note])
    result = ProbeResult(duration_s=round(walked[0], 3), decode_ok=True)
    if not walked[1]:
        result.flags.add(TRUNCATED)
    return result
