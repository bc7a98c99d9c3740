"""Real media for tests: H.264/AAC clips, JPEG photos and WAV audio made with ffmpeg."""

from __future__ import annotations

import shutil
from pathlib import Path

from firmware_interface import simkit

FFMPEG = shutil.which("ffmpeg")


# The plain generators live with the simulated-recorder kit (the demo uses them too).
make_video = simkit.make_video
make_photo = simkit.make_photo
make_wav = simkit.make_wav


def _encode_testsrc(path: Path, seconds: float, fps: int, size: str, extra: list[str]) -> Path:
    """Encode a test pattern (no audio) with extra ffmpeg output options."""
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps)]
    return simkit.lavfi(path, f"testsrc2=size={size}:rate={fps}:duration={seconds}", *extra, *h264)


def make_fragmented_video(
    path: Path, seconds: float = 4.0, fps: int = 25, size: str = "160x120"
) -> Path:
    """A fragmented MP4 (index first, a fragment per keyframe): a cut copy still opens."""
    return _encode_testsrc(path, seconds, fps, size, ["-movflags", "frag_keyframe+empty_moov"])


def make_video_with_jump(
    path: Path,
    seconds: float = 4.0,
    at: float = 2.0,
    jump: float = 5.0,
    fps: int = 25,
    size: str = "160x120",
) -> Path:
    """An MP4 whose frame timestamps jump forward by `jump` s at `at` s (an interruption)."""
    return _encode_testsrc(
        path,
        seconds,
        fps,
        size,
        ["-vf", f"setpts='PTS+if(gte(T,{at}),{jump}/TB,0)'", "-fps_mode", "passthrough"],
    )


def truncate_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of `src`'s bytes to `dst` (a recording cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst
