"""EMQX's file-transfer command grammar, filemeta schema and response format, as pure functions.

Each rule names its source in emqx/emqx (see tests/emqx/README.md for the exact places).
Nothing here imports agent/: this is the other side of the protocol, written from EMQX.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

# emqx_ft.erl on_message_puback/4: only these two prefixes are file commands.
PREFIXES = ("$file/", "$file-async/")
RESPONSE_PREFIX = "$file-response/"  # emqx_ft.erl response_topic/1
RC_SUCCESS = 0x00  # result_to_rc(ok)
RC_UNSPECIFIED_ERROR = 0x80  # result_to_rc({error, _}): EMQX sends no other code
MAX_FILENAME_BYTES = 240  # emqx_ft_schema.erl ?MAX_FILENAME_BYTELEN
FILEMETA_FIELDS = ("name", "size", "expire_at", "checksum", "segments_ttl", "user_data")
_INTEGER = re.compile(r"[+-]?[0-9]+")  # what string:to_integer/1 takes whole


class Refused(Exception):
    """A command EMQX answers with 0x80; `reason` is the name it puts in reason_description."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Command:
    """One parsed `$file/...` or `$file-async/...` command."""

    kind: str  # "init" | "segment" | "fin" | "abort"
    file_id: str
    mode: str  # "sync" ($file/) or "async" ($file-async/)
    offset: int = 0  # segment
    size: int = 0  # fin
    checksum: bytes | None = None  # segment or fin: the SHA-256 digest named in the topic
    meta: dict[str, Any] = field(default_factory=dict)  # init: the decoded filemeta


def is_file_command(topic: str) -> bool:
    """Whether EMQX's hook takes this topic (`$file` alone is not a command)."""
    return topic.startswith(PREFIXES)


def parse_command(topic: str, payload: bytes) -> Command:
    """Parse a command topic and payload as emqx_ft:on_file_command/5 does, or raise Refused."""
    mode = "async" if topic.startswith("$file-async/") else "sync"
    tokens = topic.split("/")  # emqx_topic:tokens/1 keeps empty levels
    file_id, rest = tokens[1], tokens[2:]
    if not file_id:
        raise Refused("invalid_fileid")
    if rest == ["init"]:
        return Command("init", file_id, mode, meta=decode_filemeta(payload))
    if len(rest) in (2, 3) and rest[0] == "fin":
        size = _integer(rest[1], "invalid_size")
        checksum = parse_checksum(rest[2]) if len(rest) == 3 else None
        return Command("fin", file_id, mode, size=size, checksum=checksum)
    if rest == ["abort"]:
        return Command("abort", file_id, mode)
    if len(rest) == 1:
        return Command("segment", file_id, mode, offset=_integer(rest[0], "invalid_offset"))
    if len(rest) == 2:
        offset = _integer(rest[0], "invalid_offset")
        digest = parse_checksum(rest[1])
        if sha256(payload) != digest:
            raise Refused("checksum_mismatch")
        return Command("segment", file_id, mode, offset=offset, checksum=digest)
    raise Refused("invalid_file_command")


def _integer(text: str, reason: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise Refused(reason)
    return int(text)


def parse_checksum(text: str) -> bytes:
    """A topic checksum: exactly 64 hex digits of either case (emqx_ft:parse_checksum/1)."""
    if len(text) != 64:
        raise Refused("invalid_checksum")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Refused("invalid_checksum") from None


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of `data`."""
    return hashlib.sha256(data).digest()


def decode_filemeta(payload: bytes) -> dict[str, Any]:
    """The filemeta of an `init` as emqx_ft_schema:decode(filemeta, _) accepts it, or Refused."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Refused("invalid_filemeta_json") from None
    if not isinstance(raw, dict):
        raise Refused("invalid_filemeta")
    meta = {k: v for k, v in raw.items() if v is not None}  # hocon drops nulls
    if set(meta) - set(FILEMETA_FIELDS) or not _filemeta_valid(meta):
        raise Refused("invalid_filemeta")
    if "checksum" in meta:
        meta["checksum"] = bytes.fromhex(meta["checksum"])
    return meta


def _filemeta_valid(meta: dict[str, Any]) -> bool:
    name = meta.get("name")
    checksum = meta.get("checksum", "0" * 64)
    return (
        isinstance(name, str)
        and filename_problem(name) is None
        and all(_is_int(meta.get(k, 0), 0) for k in ("size", "expire_at"))
        and _is_int(meta.get("segments_ttl", 1), 1)
        and isinstance(checksum, str)
        and len(checksum) == 64
        and all(c in "0123456789abcdefABCDEF" for c in checksum)
    )


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def filename_problem(name: str) -> str | None:
    """Why EMQX refuses a file name (emqx_ft_schema validator(filename)), or None."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        return "max_length_exceeded"
    if name == "":
        return "empty"
    if name in (".", ".."):
        return "special"
    for ch in name:
        if ch in ":\\/":
            return "unsafe"
        if not _printable(ord(ch)):
            return "nonprintable"
    return None


def _printable(c: int) -> bool:
    # emqx_ft_fs_util.erl ?IS_PRINTABLE (io_lib:printable_unicode_list/1)
    return 32 <= c <= 126 or 0xA0 <= c < 0xD800 or 0xDFFF < c < 0xFFFE or 0xFFFF < c <= 0x10FFFF


def escape_filename(name: str) -> str:
    """A directory name for a client or file id, as emqx_ft_fs_util:escape_filename/1 makes it."""
    if name in (".", ".."):
        return "".join(f"%{b:02X}" for b in name.encode())
    out = []
    for ch in name:
        if ch in "%:\\/" or not _printable(ord(ch)):
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def encode_filemeta(meta: dict[str, Any]) -> str:
    """The filemeta as EMQX serialises it (checksum as upper-case hex: binary:encode_hex/1)."""
    out = dict(meta)
    if isinstance(out.get("checksum"), bytes):
        out["checksum"] = out["checksum"].hex().upper()
    return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


def response_payload(topic: str, packet_id: int, reason: str | None) -> bytes:
    """The answer EMQX publishes for a command (emqx_ft:publish_response/2); None = success."""
    body = {
        "vsn": "0.1",
        "topic": topic,
        "packet_id": packet_id,
        "reason_code": RC_SUCCESS if reason is None else RC_UNSPECIFIED_ERROR,
        "reason_description": "success" if reason is None else reason,
    }
    return json.dumps(body).encode()


def checksum_problem(cmd: Command, meta: dict[str, Any], data: bytes) -> str | None:
    """The fin's checksum wins over the filemeta's (emqx_ft_storage_exporter:complete/2)."""
    expected = cmd.checksum or meta.get("checksum")
    if expected is not None and hashlib.sha256(data).digest() != expected:
        return "internal_error"  # {checksum_mismatch, sha256, Hex}: a 3-tuple, unnamed
    return None


def s3_headers(key: tuple[str, str], meta: dict[str, Any]) -> dict[str, str]:
    """emqx_ft_storage_exporter_s3:s3_headers/2, user-metadata keys without `x-amz-meta-`."""
    return {
        "clientid": key[0],
        "fileid": key[1],
        "filemeta": encode_filemeta(meta),
        "filemeta-vsn": "1",
    }


def packet_size(topic: str, payload: bytes, reply_to: str | None, corr: bytes | None) -> int:
    """About the PUBLISH packet's size as EMQX would see it (topic, id, properties, payload)."""
    props = (3 + len(reply_to.encode()) if reply_to else 0) + (3 + len(corr) if corr else 0)
    return 5 + 2 + len(topic.encode()) + 2 + 4 + props + len(payload)
