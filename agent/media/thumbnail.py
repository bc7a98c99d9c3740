"""Thumbnails: a small JPEG of one frame of a video, for people browsing the index."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent import durable

logger = logging.getLogger(__name__)

THUMB_AT_MS = 1000.0
JPEG_QUALITY = 80


def make_thumbnail(video: Path, out: Path, width: int = 320, tmp_dir: Path | None = None) -> bool:
    """Write a JPEG of the frame ~1 s in (or the first) to `out`; False when there is none.

    Its temp file goes to `tmp_dir` when given (the store's `.incoming`, cleared at start-up).
    """
    try:
        frame = _grab_frame(video)
        if frame is None:
            return False
        data = _encode(frame, width)
    except Exception as exc:  # a bad clip must not stop an offload
        logger.warning("thumbnail of %s failed: %s", video, exc)
        return False
    if data is None:
        return False
    durable.write_bytes(out, data, tmp_dir=tmp_dir)
    return True


def _grab_frame(video: Path) -> Any:
    """The frame ~1 s in, else the first frame, else None."""
    import cv2

    for position in (THUMB_AT_MS, 0.0):
        cap = cv2.VideoCapture(str(Path(video).absolute()), cv2.CAP_FFMPEG)
        try:
            if not cap.isOpened():
                return None
            if position:
                cap.set(cv2.CAP_PROP_POS_MSEC, position)
            ok, frame = cap.read()
        finally:
            cap.release()
        if ok and frame is not None:
            return frame
    return None


def _encode(frame: Any, width: int) -> bytes | None:
    """Scale to `width` (never up) keeping the aspect, and encode as JPEG."""
    import cv2

    height, current = frame.shape[:2]
    if current > width > 0:
        size = (width, max(1, round(height * width / current)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return bytes(buf) if ok else None
