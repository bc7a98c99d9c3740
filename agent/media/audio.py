"""Audio durations from headers with the stdlib: WAV, ADTS AAC and MP3 frame walks."""

from __future__ import annotations

import mmap
import os
import wave
from collections.abc import Callable
from pathlib import Path

ADTS_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)
MP3_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MP3_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
Buffer = bytes | mmap.mmap
FrameParser = Callable[[Buffer, int], tuple[int, float] | None]
MAX_AUDIO_BYTES = 4 * 1024**3  # larger files are not walked


def wav_duration(path: Path) -> float | None:
    """Duration of a PCM WAV from its header; None when the header cannot be read."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate > 0 else None
    except (wave.Error, EOFError, ValueError):
        return None


def frames_duration(path: Path) -> tuple[float, bool] | None:
    """(duration, complete) of an ADTS AAC or MP3 stream by walking frames; None if neither."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0 or size > MAX_AUDIO_BYTES:
            return None
        # mapped, not read: only the frame headers are touched, and nothing is held in memory
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk_any(data)


def _walk_any(data: Buffer) -> tuple[float, bool] | None:
    """Pick the frame parser from the first frame's sync word, then walk."""
    start = _skip_id3(data)
    if data[start : start + 2] in (b"\xff\xf1", b"\xff\xf9"):
        return _walk(data, start, _adts_frame)
    if len(data) > start + 1 and data[start] == 0xFF and data[start + 1] & 0xE0 == 0xE0:
        return _walk(data, start, _mp3_frame)
    return None


def _skip_id3(data: Buffer) -> int:
    """Offset of the first byte after an ID3v2 tag, 0 when there is none."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | (byte & 0x7F)
    return 10 + size


def _walk(data: Buffer, offset: int, frame: FrameParser) -> tuple[float, bool] | None:
    """Sum the durations of consecutive frames; complete is False when the walk stops early."""
    seconds, count = 0.0, 0
    while offset < len(data):
        parsed = frame(data, offset)
        if parsed is None or offset + parsed[0] > len(data):
            break
        offset += parsed[0]
        seconds += parsed[1]
        count += 1
    rest = len(data) - offset
    complete = rest <= 0 or (rest == 128 and data[offset : offset + 3] == b"TAG")  # ID3v1
    return (seconds, complete) if count else None


def _adts_frame(data: Buffer, at: int) -> tuple[int, float] | None:
    """(length, seconds) of the ADTS frame at `at`, or None."""
    h = data[at : at + 7]
    if len(h) < 7 or h[0] != 0xFF or h[1] & 0xF6 != 0xF0:
        return None
    rate_index = (h[2] >> 2) & 0x0F
    length = ((h[3] & 0x03) << 11) | (h[4] << 3) | (h[5] >> 5)
    blocks = (h[6] & 0x03) + 1
    if rate_index >= len(ADTS_RATES) or length < 7:
        return None
    return length, 1024 * blocks / ADTS_RATES[rate_index]


def _mp3_frame(data: Buffer, at: int) -> tuple[int, float] | None:
    """(length, seconds) of the MPEG audio layer III frame at `at`, or None."""
    h = data[at : at + 4]
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0 or (h[1] >> 1) & 0x03 != 1:
        return None
    version = (h[1] >> 3) & 0x03
    bitrate_index, rate_index = h[2] >> 4, (h[2] >> 2) & 0x03
    if version == 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    table = MP3_BITRATES_V1 if version == 3 else MP3_BITRATES_V2
    rate = MP3_RATES[version][rate_index]
    samples = 1152 if version == 3 else 576
    length = samples // 8 * table[bitrate_index] * 1000 // rate + ((h[2] >> 1) & 0x01)
    return length, samples / rate
