"""Real media for tests: H.264/AAC clips, JPEG photos and WAV audio made with ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FFMPEG = shutil.which("ffmpeg")


def make_video(
    path: Path, seconds: float = 2.0, fps: int = 25, size: str = "320x240", audio: bool = True
) -> Path:
    """An H.264 (+AAC) MP4 of `seconds` with a moving test pattern."""
    assert FFMPEG, "ffmpeg is not installed"
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}:duration={seconds}",
    ]
    if audio:
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:a",
            "aac",
            "-b:a",
            "32k",
        ]
    cmd += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps),
        "-shortest",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def make_photo(path: Path, size: str = "640x480") -> Path:
    """A JPEG still."""
    assert FFMPEG, "ffmpeg is not installed"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=1:duration=1",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path


def make_wav(path: Path, seconds: float = 1.0) -> Path:
    """A PCM WAV tone."""
    assert FFMPEG, "ffmpeg is not installed"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            str(path),
        ],
        check=True,
    )
    return path
