"""Building simulated recorders (SPEC 5 layout) with real media, for the demo and tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_interface.simulated import write_json


def ffmpeg() -> str:
    """The ffmpeg executable; a clear error when it is missing."""
    path = shutil.which("ffmpeg")
    if not path:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    return path


def lavfi(path: Path, source: str, *output: str) -> Path:
    """Render an ffmpeg lavfi `source` (test pattern, tone) into `path` with `output` options."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", source, *output, str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_video(
    path: Path,
    seconds: float = 2.0,
    fps: int = 25,
    size: str = "320x240",
    audio: bool = True,
    faststart: bool = False,
) -> Path:
    """A real H.264 (+AAC) MP4 of `seconds` showing a moving test pattern."""
    out: list[str] = []
    if audio:
        out += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        out += ["-c:a", "aac", "-b:a", "32k"]
    out += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps)]
    out += ["-movflags", "+faststart"] if faststart else []
    out += ["-metadata", f"comment={path.name}", "-shortest"]  # distinct bytes for every clip
    return lavfi(path, f"testsrc2=size={size}:rate={fps}:duration={seconds}", *out)


def make_photo(path: Path, size: str = "640x480") -> Path:
    """A real JPEG still."""
    return lavfi(path, f"testsrc2=size={size}:rate=1:duration=1", "-frames:v", "1")


def make_wav(path: Path, seconds: float = 1.0) -> Path:
    """A real PCM WAV tone."""
    return lavfi(path, f"sine=frequency=440:duration={seconds}")


@dataclass
class SimClip:
    """A clip to put on a simulated recorder: start (recorder local time) and length."""

    start_local: datetime
    seconds: float = 2.0
    ext: str = "MP4"
    name: str | None = None  # override the SPEC 5 name (to test unparsed names)


@dataclass
class SimRecorder:
    """The description of a simulated recorder to build into a directory."""

    device_id: str = "ZFY0012345"
    officer_id: str = "012345"
    officer_name: str = "张三"
    battery_pct: float = 64
    storage_total_bytes: int = 64_000_000_000
    clock_offset_s: float = 0.0
    charge_pct_per_min: float = 1.0
    clips: list[SimClip] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    events_raw: bytes = b""  # appended to LOG/events.jsonl as is (hostile logs)
    json_extra: str = ""  # members spliced into recorder.json as is, e.g. '"x": [[[...]]]'

    def file_name(self, clip: SimClip, seq: int) -> str:
        """The SPEC 5 file name of a clip."""
        if clip.name:
            return clip.name
        return f"{self.device_id}_{self.officer_id}_{clip.start_local:%Y%m%d%H%M%S}_{seq:04d}.{clip.ext}"


def build(root: Path, rec: SimRecorder, docked: bool = True) -> list[Path]:
    """Write media, event log and (when `docked`) recorder.json; returns the media paths."""
    paths = []
    for seq, clip in enumerate(rec.clips, 1):
        path = root / "DCIM" / "100MEDIA" / rec.file_name(clip, seq)
        _make_media(path, clip)
        paths.append(path)
    if rec.events or rec.events_raw:
        log = root / "LOG" / "events.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in rec.events)
        log.write_bytes(lines.encode() + rec.events_raw)
    if docked:
        dock(root, rec)
    return paths


def _make_media(path: Path, clip: SimClip) -> None:
    ext = clip.ext.upper()
    if ext in ("JPG", "JPEG"):
        make_photo(path)
    elif ext == "WAV":
        make_wav(path, clip.seconds)
    else:
        make_video(path, clip.seconds)


def dock(root: Path, rec: SimRecorder) -> None:
    """Put the recorder into its bay: write recorder.json last, as the watcher keys on it."""
    data = {
        "device_id": rec.device_id,
        "model": "DSJ-SIM1",
        "firmware": "1.0.0",
        "officer_id": rec.officer_id,
        "officer_name": rec.officer_name,
        "unit_no": "410000",
        "unit_name": "水政监察大队",
        "battery_pct": rec.battery_pct,
        "storage_total_bytes": rec.storage_total_bytes,
        "clock_offset_s": rec.clock_offset_s,
        "charge_pct_per_min": rec.charge_pct_per_min,
    }
    if not rec.json_extra:
        write_json(root / "recorder.json", data)
        return
    text = json.dumps(data, ensure_ascii=False)[:-1] + ", " + rec.json_extra + "}"
    tmp = root / ".recorder.json.tmp"
    tmp.write_text(text, encoding="utf-8", errors="surrogatepass")
    os.replace(tmp, root / "recorder.json")  # whole, at once: the watcher keys on it


def undock(root: Path) -> None:
    """Take the recorder out of its bay."""
    (root / "recorder.json").unlink(missing_ok=True)


def shift(start: datetime, lengths: list[float], pause_s: float = 0.0) -> list[SimClip]:
    """Back-to-back (or paused) clips of a shift starting at `start`."""
    clips, t = [], start
    for seconds in lengths:
        clips.append(SimClip(t, seconds))
        t += timedelta(seconds=seconds + pause_s)
    return clips
