"""The directory name of a free-form file id: an escaping that can never leave the store.

A file id (any non-empty text of at most 255 bytes, SPEC 7.1) becomes one directory entry:

- every character that is not printable, and `%`, `/`, `\\`, `:`, `~`, is written as its
  UTF-8 bytes in `%XX` form (upper-case hex), as EMQX's own store does (`emqx_ft_fs_util`);
- a leading `.` is written `%2E`, so no name is `.`, `..` or hidden;
- a name that would be longer than 255 bytes is `~` + the SHA-256 hex of the file id instead
  (`~` never appears in an escaped name, so the two forms cannot meet).

A SHA-256 file id (what a dock sends) is its own directory name.
"""

from __future__ import annotations

import hashlib
import re

MAX_DIR_BYTES = 255
HASHED_PREFIX = "~"
UNIDENTIFIED_DIR = "_unidentified"  # {store}/_unidentified/{escaped file id}/ (SPEC 7.1)
_UNSAFE = frozenset("%/\\:~")
_HASHED_RE = re.compile(r"~[0-9a-f]{64}")
_PERCENT_RE = re.compile(r"%([0-9A-F]{2})")
_PLAIN_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")  # its own name (a SHA-256 hex)


def _printable(ch: str) -> bool:
    """As EMQX (io_lib:printable_unicode_list): ASCII 32..126 and most of Unicode above 0xA0."""
    c = ord(ch)
    return 32 <= c <= 126 or 0xA0 <= c < 0xD800 or 0xDFFF < c < 0xFFFE or 0xFFFF < c <= 0x10FFFF


def _percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


def escape_file_id(file_id: str) -> str:
    """The directory name of `file_id` (see the module docstring)."""
    if _PLAIN_RE.fullmatch(file_id):
        return file_id
    out = [_percent(ch) if ch in _UNSAFE or not _printable(ch) else ch for ch in file_id]
    if out and out[0] == ".":
        out[0] = "%2E"
    name = "".join(out)
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_DIR_BYTES:
        return HASHED_PREFIX + hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()
    return name


def unescape_dir(name: str) -> str | None:
    """The file id a directory name stands for; None for a hashed name or any other name."""
    if _HASHED_RE.fullmatch(name):
        return None
    out = bytearray()
    pos = 0
    for m in _PERCENT_RE.finditer(name):
        out += name[pos : m.start()].encode("utf-8", "surrogatepass")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += name[pos:].encode("utf-8", "surrogatepass")
    try:
        file_id = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return file_id if escape_file_id(file_id) == name else None


def is_transfer_dir(name: str) -> bool:
    """True when `name` is a name `escape_file_id` can give (other entries are not ours)."""
    return bool(_HASHED_RE.fullmatch(name)) or unescape_dir(name) is not None
