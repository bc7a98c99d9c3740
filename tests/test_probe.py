"""Media probing on real ffmpeg-made clips: whole, cut, cut before the index, interrupted."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from agent.media import make_thumbnail, probe
from tests.media import (
    FFMPEG,
    make_fragmented_video,
    make_photo,
    make_video,
    make_video_with_jump,
    make_wav,
    truncate_copy,
)

pytestmark = pytest.mark.skipif(not FFMPEG, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One set of small clips for the whole module (ffmpeg is the slow part)."""
    root = tmp_path_factory.mktemp("clips")
    make_video(root / "whole.mp4", seconds=4, size="160x120")
    make_fragmented_video(root / "frag.mp4", seconds=4)
    truncate_copy(root / "frag.mp4", root / "frag_half.mp4")
    truncate_copy(root / "whole.mp4", root / "cut_before_index.mp4")
    make_video_with_jump(root / "jump.mp4", seconds=4, at=2.0, jump=5.0)
    return root


def sha256(path: Path) -> str:
    """Hash of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_whole_clip_decodes_with_header_values(clips: Path) -> None:
    result = probe(clips / "whole.mp4", "video")
    assert result.decode_ok is True
    assert result.flags == set()
    assert (result.width, result.height, result.fps, result.frame_count) == (160, 120, 25.0, 100)
    assert result.duration_s == pytest.approx(4.0, abs=0.05)
    assert result.interruptions == [] and result.findings == []


def test_clip_cut_in_half_is_truncated(clips: Path) -> None:
    whole = probe(clips / "frag.mp4", "video")
    half = probe(clips / "frag_half.mp4", "video")
    assert whole.flags == set()
    assert half.flags == {"truncated"}
    assert half.decode_ok is True  # what is there still plays
    assert half.frame_count is not None and half.frame_count < 0.75 * 100
    assert [f.code for f in half.findings] == ["media_truncated"]


def test_clip_cut_before_its_index_is_undecodable(clips: Path) -> None:
    result = probe(clips / "cut_before_index.mp4", "video")
    assert result.decode_ok is False
    assert "undecodable" in result.flags and "truncated" in result.flags
    assert result.frame_count is None
    assert "media_undecodable" in [f.code for f in result.findings]


def test_timestamp_jump_inside_a_clip_is_one_interruption(clips: Path) -> None:
    result = probe(clips / "jump.mp4", "video")
    assert len(result.interruptions) == 1
    offset, jump = result.interruptions[0]
    assert offset == pytest.approx(2.0, abs=0.1)
    assert jump == pytest.approx(5.0, abs=0.1)
    assert result.duration_s == pytest.approx(9.0, abs=0.1)
    assert result.flags == set()


def test_probing_never_alters_the_original(clips: Path, tmp_path: Path) -> None:
    clip = tmp_path / "ro.mp4"
    clip.write_bytes((clips / "whole.mp4").read_bytes())
    before = (sha256(clip), clip.stat().st_mtime_ns)
    clip.chmod(0o444)
    assert probe(clip, "video").decode_ok is True
    assert (sha256(clip), clip.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    ("name", "data", "media_type"),
    [
        ("zero.mp4", b"", "video"),
        ("noise.mp4", os.urandom(50_000), "video"),
        ("boxes.mov", b"\x00\x00\x00\x08free" * 3 + b"\xff" * 100, "video"),
        ("text.jpg", b"not a photo at all", "photo"),
        ("noise.wav", b"RIFF\x10\x00\x00\x00WAVEjunk", "audio"),
        ("empty.jpg", b"", "photo"),
    ],
)
def test_garbage_never_raises(tmp_path: Path, name: str, data: bytes, media_type: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = probe(path, media_type)
    assert result.decode_ok is False
    assert "undecodable" in result.flags
    assert result.findings and result.findings[0].code == "media_undecodable"


def test_missing_file_and_unknown_type_do_not_raise(tmp_path: Path) -> None:
    assert probe(tmp_path / "gone.mp4", "video").decode_ok is False
    assert probe(tmp_path / "x.bin", "document").decode_ok is None


def test_photo_size_and_truncation(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "p.jpg", size="640x480")
    result = probe(photo, "photo")
    assert (result.width, result.height, result.decode_ok, result.flags) == (640, 480, True, set())
    cut = probe(truncate_copy(photo, tmp_path / "cut.jpg", 0.6), "photo")
    assert cut.flags == {"truncated"} and cut.width == 640


def test_wav_duration_and_truncation(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav", seconds=1.0)
    result = probe(wav, "audio")
    assert result.decode_ok is True and result.flags == set()
    assert result.duration_s == pytest.approx(1.0, abs=0.01)
    cut = probe(truncate_copy(wav, tmp_path / "cut.wav"), "audio")
    assert "truncated" in cut.flags


@pytest.mark.parametrize(("ext", "args"), [("aac", ["-c:a", "aac", "-f", "adts"]), ("mp3", [])])
def test_compressed_audio_duration(tmp_path: Path, ext: str, args: list[str]) -> None:
    path = tmp_path / f"a.{ext}"
    assert FFMPEG
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=3", *args, str(path)]
    subprocess.run(cmd, check=True)
    result = probe(path, "audio")
    assert result.decode_ok is True and result.flags == set()
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    assert "truncated" in probe(truncate_copy(path, tmp_path / f"cut.{ext}", 0.55), "audio").flags


def test_thumbnail_is_a_small_jpeg(clips: Path, tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "thumbs" / "t.jpg"
    assert make_thumbnail(clips / "whole.mp4", out, width=80) is True
    image = cv2.imread(str(out))
    assert image is not None and image.shape[:2] == (60, 80)


def test_no_thumbnail_for_an_undecodable_clip(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.jpg"
    assert make_thumbnail(clips / "cut_before_index.mp4", out) is False
    assert not out.exists()
