"""Proof that a file on the recorder is a given clip: its size and SHA-256, read now."""

from __future__ import annotations

import hashlib

from agent.evidence.store import CHUNK
from firmware_interface.base import ClipEntry, Recorder, RecorderGone


def recorder_sha256(recorder: Recorder, entry: ClipEntry) -> tuple[int, str]:
    """Size and SHA-256 of the file now on the recorder under `entry`'s path."""
    h = hashlib.sha256()
    size = 0
    try:
        with recorder.open_clip(entry) as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise RecorderGone(f"reading the recorder failed: {exc}") from exc
    return size, h.hexdigest()
