"""A test session's cache of the media ffmpeg makes: each distinct clip is encoded once.

Tests make the same few clips again and again (a 2 s 320x240 MP4, a 640x480 JPEG, a 1 s
tone): 69 ffmpeg runs of 14 distinct kinds took 14.8 s of a 40.8 s run of seven test files.
The cache keys a clip by everything ffmpeg is given (source, options, output format) and
copies the cached file into place. `simkit.make_video` names each clip in its metadata so
that no two clips have the same bytes; the cache keeps that promise with a top-level `free`
box holding the name, appended to the cached MP4 (players and parsers skip `free` boxes), so
every clip is still a real ffmpeg H.264 file with bytes of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path

Encode = Callable[..., Path]
ISO_BMFF = (".mp4", ".mov", ".m4v")


class ClipCache:
    """`lavfi(path, source, *output)` with the encoding done once per distinct request."""

    def __init__(self, root: Path, encode: Encode) -> None:
        self.root = root
        self._encode = encode
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lavfi(self, path: Path, source: str, *output: str) -> Path:
        """The clip at `path`, as `simkit.lavfi` would make it."""
        options, name = _without_comment(list(output))
        suffix = path.suffix.lower()
        if name is not None and suffix not in ISO_BMFF:
            return self._encode(path, source, *output)  # no box to hold the name: encode
        cached = self._cached(source, options, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, path)
        if name is not None:
            with open(path, "ab") as fh:
                fh.write(free_box(name.encode()))
        return path

    def _cached(self, source: str, options: list[str], suffix: str) -> Path:
        key = hashlib.sha256(json.dumps([source, options, suffix]).encode()).hexdigest()
        cached = self.root / f"{key[:32]}{suffix}"
        with self._lock:
            if cached.exists():
                self.hits += 1
                return cached
            self.misses += 1
            made = self._encode(self.root / f".{key[:32]}.part{suffix}", source, *options)
            os.replace(made, cached)
            return cached


def _without_comment(output: list[str]) -> tuple[list[str], str | None]:
    """The options without `-metadata comment=NAME`, and NAME (None when there is none)."""
    for i in range(len(output) - 1):
        if output[i] == "-metadata" and output[i + 1].startswith("comment="):
            return output[:i] + output[i + 2 :], output[i + 1].removeprefix("comment=")
    return output, None


def free_box(payload: bytes) -> bytes:
    """An ISO BMFF `free` box: size, type, payload."""
    return struct.pack(">I", 8 + len(payload)) + b"free" + payload
