"""EMQX "File Transfer over MQTT" wire format (SPEC 7): topics, payloads, parsing, reason codes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

VSN = "0.1"
RESPONSE_PREFIX = "$file-response/"

# MQTT v5 reason codes, as EMQX uses them in file-transfer responses.
SUCCESS = 0x00
UNSPECIFIED_ERROR = 0x80
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
NOT_AUTHORIZED = 0x87
TOPIC_NAME_INVALID = 0x90
QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99

MAX_NAME_BYTES = 240
MAX_CLIENT_ID_BYTES = 128
MAX_FILE_ID_BYTES = 255  # a free-form file id (EMQX clients), SPEC 7.1
ASYNC_SUFFIX = "-async"  # `$file-async/`: EMQX acks the fin PUBACK at once, answers by message

# EMQX's error names, sent as `reason_description` with reason code 0x80 (SPEC 7.1).
FILEMETA_CONFLICT = "filemeta_conflict"
ENOSPC = "enospc"
EDQUOT = "edquot"
NO_ROOM_ERRORS = frozenset({ENOSPC, EDQUOT})
RESERVED_NAMES = frozenset({"manifest.json"})
_FILE_ID_RE = re.compile(r"[0-9a-f]{64}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_OFFSET_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class ProtocolError(Exception):
    """A command the broker side refuses: carries the reason code and a description."""

    def __init__(self, reason_code: int, description: str) -> None:
        super().__init__(description)
        self.reason_code = reason_code
        self.description = description


@dataclass(frozen=True)
class FileMeta:
    """The `init` payload: what the sender declares about the file."""

    name: str
    size: int
    checksum: str
    expire_at: int | None = None
    segments_ttl: int | None = None
    user_data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Init:
    """`{prefix}/{file_id}/init`."""

    file_id: str
    meta: FileMeta


@dataclass(frozen=True)
class Segment:
    """`{prefix}/{file_id}/{offset}[/{checksum}]`; the payload holds the bytes."""

    file_id: str
    offset: int
    checksum: str | None  # None: an EMQX client sent none (SPEC 7.1)


@dataclass(frozen=True)
class Fin:
    """`{prefix}/{file_id}/fin/{size}[/{checksum}]`."""

    file_id: str
    size: int
    checksum: str | None  # None: an EMQX client sent none (SPEC 7.1)


@dataclass(frozen=True)
class Abort:
    """`{prefix}/{file_id}/abort` (EMQX acknowledges it with success)."""

    file_id: str


Command = Init | Segment | Fin
Request = Init | Segment | Fin | Abort  # what a receiver serving any EMQX client accepts


@dataclass(frozen=True)
class Response:
    """The broker side's answer on `$file-response/{client_id}`."""

    topic: str
    packet_id: int | None
    reason_code: int
    reason_description: str
    vsn: str = VSN
    receipt: str | None = None  # on a successful fin, from a receiver holding the dock's key

    @property
    def ok(self) -> bool:
        """True when the command succeeded."""
        return self.reason_code == SUCCESS


def no_room(resp: Response | None) -> bool:
    """True when the answer means "no room at the receiver": 0x97, or EMQX's enospc/edquot."""
    if resp is None:
        return False
    return resp.reason_code == QUOTA_EXCEEDED or (
        resp.reason_code == UNSPECIFIED_ERROR and resp.reason_description in NO_ROOM_ERRORS
    )


def async_prefix(prefix: str) -> str:
    """The `$file-async` form of a prefix."""
    return prefix + ASYNC_SUFFIX


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 of `data` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def response_topic(client_id: str) -> str:
    """The response topic of a sender."""
    return f"{RESPONSE_PREFIX}{client_id}"


def init_topic(prefix: str, file_id: str) -> str:
    """Topic of the `init` command."""
    return f"{prefix}/{file_id}/init"


def segment_topic(prefix: str, file_id: str, offset: int, checksum: str | None) -> str:
    """Topic of one segment (no checksum level when `checksum` is None, as EMQX allows)."""
    tail = "" if checksum is None else f"/{checksum}"
    return f"{prefix}/{file_id}/{offset}{tail}"


def fin_topic(prefix: str, file_id: str, size: int, checksum: str | None) -> str:
    """Topic of the `fin` command (no checksum level when `checksum` is None, as EMQX allows)."""
    tail = "" if checksum is None else f"/{checksum}"
    return f"{prefix}/{file_id}/fin/{size}{tail}"


def abort_topic(prefix: str, file_id: str) -> str:
    """Topic of the `abort` command."""
    return f"{prefix}/{file_id}/abort"


def init_payload(meta: FileMeta) -> bytes:
    """The JSON payload of `init` (an empty checksum, "not declared", is left out)."""
    body: dict[str, Any] = {"name": meta.name, "size": meta.size}
    if meta.checksum:
        body["checksum"] = meta.checksum
    if meta.expire_at is not None:
        body["expire_at"] = meta.expire_at
    if meta.segments_ttl is not None:
        body["segments_ttl"] = meta.segments_ttl
    body["user_data"] = meta.user_data
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def response_payload(resp: Response) -> bytes:
    """The JSON payload of a response (EMQX shape)."""
    body = {
        "vsn": resp.vsn,
        "topic": resp.topic,
        "packet_id": resp.packet_id,
        "reason_code": resp.reason_code,
        "reason_description": resp.reason_description,
    }
    if resp.receipt is not None:
        body["receipt"] = resp.receipt
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def path_component_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be one directory entry under the store, or None when it can."""
    if not value:
        return "is empty"
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    for bad, what in (("/", "'/'"), ("\\", "'\\'"), ("\x00", "NUL"), ("..", "'..'")):
        if bad in value:
            return f"contains {what}"
    if value.startswith("."):
        return "starts with a dot"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "contains a control character"
    return None


def check_file_id(file_id: str) -> None:
    """Refuse a file id that is not a SHA-256 in lowercase hex."""
    if not _FILE_ID_RE.fullmatch(file_id):
        raise ProtocolError(
            TOPIC_NAME_INVALID, f"file_id {file_id[:80]!r}: expected 64 lowercase hex"
        )


def check_any_file_id(file_id: str) -> None:
    """Refuse a file id EMQX would refuse (empty), or longer than MAX_FILE_ID_BYTES (SPEC 7.1)."""
    if not file_id:
        raise ProtocolError(UNSPECIFIED_ERROR, "file_id is empty")
    if len(file_id.encode("utf-8", "surrogatepass")) > MAX_FILE_ID_BYTES:
        raise ProtocolError(
            UNSPECIFIED_ERROR, f"file_id {file_id[:40]!r}...: longer than {MAX_FILE_ID_BYTES} bytes"
        )


def check_name(name: str) -> None:
    """Refuse a file name that could escape or clash inside the store."""
    problem = path_component_problem(name, MAX_NAME_BYTES)
    if problem is None and name in RESERVED_NAMES:
        problem = "is reserved"
    if problem:
        raise ProtocolError(NOT_AUTHORIZED, f"name {name[:80]!r} {problem}")


def client_id_from_response_topic(topic: str | None) -> str | None:
    """The sender's client id from `$file-response/{client_id}`, or None if that is not the form."""
    if not topic or not topic.startswith(RESPONSE_PREFIX):
        return None
    client_id = topic[len(RESPONSE_PREFIX) :]
    if any(ch in client_id for ch in "/+#"):
        return None
    if path_component_problem(client_id, MAX_CLIENT_ID_BYTES):
        return None
    return client_id


def _checksum(value: str, what: str) -> str:
    if not _HEX64_RE.fullmatch(value):
        raise ProtocolError(TOPIC_NAME_INVALID, f"{what} {value[:80]!r}: expected SHA-256 hex")
    return value.lower()


def _number(value: str, what: str) -> int:
    if not _OFFSET_RE.fullmatch(value):
        raise ProtocolError(
            TOPIC_NAME_INVALID, f"{what} {value[:40]!r}: expected a non-negative integer"
        )
    return int(value)


def parse_topic(prefix: str, topic: str) -> tuple[str, list[str]]:
    """Split a command topic into (file_id, rest), refusing a bad file id."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise ProtocolError(TOPIC_NAME_INVALID, f"topic {topic[:120]!r} is not under {prefix!r}")
    parts = topic[len(head) :].split("/")
    check_file_id(parts[0])
    return parts[0], parts[1:]


def parse_command(prefix: str, topic: str, payload: bytes) -> Command:
    """Parse one file-transfer command, or raise ProtocolError saying why not."""
    file_id, rest = parse_topic(prefix, topic)
    if rest == ["init"]:
        return Init(file_id, parse_init(payload))
    if len(rest) == 3 and rest[0] == "fin":
        size = _number(rest[1], "fin size")
        return Fin(file_id, size, _checksum(rest[2], "fin checksum"))
    if len(rest) == 2 and rest[0] != "fin":
        offset = _number(rest[0], "segment offset")
        return Segment(file_id, offset, _checksum(rest[1], "segment checksum"))
    raise ProtocolError(TOPIC_NAME_INVALID, f"topic {topic[:120]!r}: not a known command")


def parse_segment(prefix: str, topic: str) -> Segment | None:
    """The segment a topic names, None for any other command; raises ProtocolError when malformed."""
    file_id, rest = parse_topic(prefix, topic)
    if len(rest) != 2 or rest[0] == "fin":
        return None
    return Segment(
        file_id, _number(rest[0], "segment offset"), _checksum(rest[1], "segment checksum")
    )


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, f"init {key} {value!r}: expected an integer")
    return value


def _init_body(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "init payload: expected UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "init payload: expected a JSON object")
    return body


def parse_init(payload: bytes, checksum_required: bool = True) -> FileMeta:
    """Parse and check an `init` payload.

    With `checksum_required` False (EMQX clients may leave it out) a missing checksum is "".
    """
    body = _init_body(payload)
    name, size, checksum = body.get("name"), body.get("size"), body.get("checksum")
    if not isinstance(name, str):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "init name: expected a string")
    check_name(name)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, f"init size {size!r}: expected an integer >= 0")
    if checksum is None and not checksum_required:
        checksum = ""
    elif not isinstance(checksum, str):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "init checksum: expected SHA-256 hex")
    user_data = body.get("user_data", {})
    if not isinstance(user_data, dict):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "init user_data: expected a JSON object")
    return FileMeta(
        name=name,
        size=size,
        checksum=_checksum(checksum, "init checksum") if checksum else "",
        expire_at=_optional_int(body, "expire_at"),
        segments_ttl=_optional_int(body, "segments_ttl"),
        user_data=user_data,
    )


def parse_response(payload: bytes) -> Response:
    """Parse a response payload, or raise ProtocolError."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "response: expected UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "response: expected a JSON object")
    code = body.get("reason_code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ProtocolError(PAYLOAD_FORMAT_INVALID, "response: reason_code missing")
    packet_id = body.get("packet_id")
    receipt = body.get("receipt")
    return Response(
        topic=str(body.get("topic", "")),
        packet_id=packet_id if isinstance(packet_id, int) else None,
        reason_code=code,
        reason_description=str(body.get("reason_description", "")),
        vsn=str(body.get("vsn", VSN)),
        receipt=receipt if isinstance(receipt, str) else None,
    )


def parse_request(prefix: str, topic: str, payload: bytes) -> tuple[bool, Request]:
    """Parse a command of any EMQX client (SPEC 7.1): (async, request), or raise ProtocolError.

    Both `{prefix}/` and `{prefix}-async/`; any non-empty file id of at most MAX_FILE_ID_BYTES;
    segment and fin checksums optional, init checksum optional ("" when absent); `abort`.
    """
    is_async = topic.startswith(async_prefix(prefix) + "/")
    head = (async_prefix(prefix) if is_async else prefix) + "/"
    if not topic.startswith(head):
        raise ProtocolError(TOPIC_NAME_INVALID, f"topic {topic[:120]!r} is not under {prefix!r}")
    file_id, *rest = topic[len(head) :].split("/")
    check_any_file_id(file_id)
    return is_async, _request(file_id, rest, topic, payload)


def _request(file_id: str, rest: list[str], topic: str, payload: bytes) -> Request:
    if rest == ["init"]:
        return Init(file_id, parse_init(payload, checksum_required=False))
    if rest == ["abort"]:
        return Abort(file_id)
    if rest and rest[0] == "fin" and len(rest) in (2, 3):
        fin_sum = _checksum(rest[2], "fin checksum") if len(rest) == 3 else None
        return Fin(file_id, _number(rest[1], "fin size"), fin_sum)
    if len(rest) in (1, 2) and rest[0] != "fin":
        seg_sum = _checksum(rest[1], "segment checksum") if len(rest) == 2 else None
        return Segment(file_id, _number(rest[0], "segment offset"), seg_sum)
    raise ProtocolError(TOPIC_NAME_INVALID, f"topic {topic[:120]!r}: not a known command")
