"""What EMQX's file transfer allows and answers (SPEC 7.1): names, packet size, "no room" errors."""

from __future__ import annotations

import hashlib

from agent.transfer import protocol as p

MAX_PACKET_BYTES = 1_048_576  # EMQX's default mqtt.max_packet_size
# Room for the fixed header, the topic ($file/{64 hex}/{offset}/{64 hex}, ~160 bytes) and the
# properties (Response Topic with a client id of up to 128 bytes, 16 bytes of Correlation Data).
PACKET_ROOM_BYTES = 4096
MAX_SEGMENT_BYTES = MAX_PACKET_BYTES - PACKET_ROOM_BYTES
MAX_SEGMENTS_TTL_S = 24 * 3600  # EMQX's default maximum_segments_ttl
MANIFEST_SUFFIX = ".manifest.json"
_UNSAFE = "%:\\/"  # emqx_ft_fs_util ?IS_UNSAFE; '%' is EMQX's escape, kept out of our names


def printable(ch: str) -> bool:
    """EMQX's ?IS_PRINTABLE (io_lib:printable_unicode_list) for one character."""
    c = ord(ch)
    return 32 <= c <= 126 or 0xA0 <= c < 0xD800 or 0xDFFF < c < 0xFFFE or 0xFFFF < c <= 0x10FFFF


def name_problem(name: str) -> str | None:
    """Why EMQX or our receiver would refuse `name` as a file name, or None."""
    if name in (".", ".."):
        return "is special"
    if any(ch in _UNSAFE or not printable(ch) for ch in name):
        return "has an unsafe or unprintable character"
    try:
        p.check_name(name)
    except p.ProtocolError as exc:
        return exc.description
    return None


def _fit(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def safe_name(name: str, max_bytes: int = p.MAX_NAME_BYTES) -> str:
    """`name` when both EMQX and our receiver accept it, else a safe name close to it."""
    if len(name.encode("utf-8", "surrogatepass")) <= max_bytes and name_problem(name) is None:
        return name
    tag = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    clean = "".join(ch if ch not in _UNSAFE and printable(ch) else "_" for ch in name)
    clean = clean.lstrip(".").replace("..", "_")
    stem, dot, ext = clean.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = clean, ""
    suffix = f"-{tag}.{ext}" if ext else f"-{tag}"
    candidate = _fit(stem, max_bytes - len(suffix.encode("utf-8"))) + suffix
    return candidate if name_problem(candidate) is None else f"clip-{tag}"


def manifest_name(clip_name: str) -> str:
    """The name of a clip's manifest transfer: `{clip name}.manifest.json`, within EMQX's limit."""
    room = p.MAX_NAME_BYTES - len(MANIFEST_SUFFIX)
    return safe_name(safe_name(clip_name, room) + MANIFEST_SUFFIX)
