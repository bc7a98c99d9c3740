"""The session's clip cache (tests/media_cache.py): a cached clip is still a real, whole clip,
and clips that were distinct before the cache are distinct with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.media.container import declared_beyond_eof, movie_header
from agent.media.probe import probe
from tests.media import FFMPEG, make_photo, make_video
from tests.media_cache import ClipCache

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cached_clips_are_whole_distinct_and_decode(tmp_path: Path, clip_cache: ClipCache) -> None:
    a = make_video(tmp_path / "ZFY1_000001_20261121091403_0001.MP4", seconds=1.0)
    misses = clip_cache.misses
    b = make_video(tmp_path / "ZFY1_000001_20261121091405_0002.MP4", seconds=1.0)
    assert clip_cache.misses == misses, "the second clip of the same kind was not encoded"
    assert sha(a) != sha(b), "every clip keeps bytes of its own"
    for clip in (a, b):
        result = probe(clip, "video")
        assert result.decode_ok is True and result.duration_s == pytest.approx(1.0, abs=0.1)
        assert (result.width, result.height) == (320, 240)
        assert declared_beyond_eof(clip) is False
        with open(clip, "rb") as fh:
            header = movie_header(fh)
        assert header is not None and header.duration_s == pytest.approx(1.0, abs=0.1)
    photos = [make_photo(tmp_path / f"{n}.JPG") for n in (1, 2)]
    assert sha(photos[0]) == sha(photos[1])  # as ffmpeg makes them: one test pattern frame
    assert probe(photos[0], "photo").width == 640
