"""The fixture's pure parts against the cases of EMQX's own emqx_ft_SUITE.erl (no broker)."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.emqx.commands import (
    Refused,
    decode_filemeta,
    escape_filename,
    is_file_command,
    parse_command,
    response_payload,
)
from tests.emqx.segments import SegmentStore

HEX = hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("topic", "reason"),
    [  # t_invalid_topic_format, t_invalid_fileid
        ("$file/fileid", "invalid_file_command"),
        ("$file/fileid/", "invalid_offset"),
        ("$file/fileid/offset", "invalid_offset"),
        ("$file/fileid/fin/offset", "invalid_size"),
        ("$file/fileid/fin/42/xyz", "invalid_checksum"),
        ("$file/", "invalid_fileid"),
        ("$file//init", "invalid_fileid"),
        ("$file/X/Y/Z", "invalid_offset"),
        ("$file/f/fin", "invalid_offset"),
        (f"$file/f/fin/3/{HEX}/x", "invalid_file_command"),
        (f"$file/f/0/{hashlib.sha256(b'other').hexdigest()}", "checksum_mismatch"),
    ],
)
def test_refused_topics(topic: str, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_command(topic, b"abc")
    assert refused.value.reason == reason


def test_commands_parsed() -> None:
    assert not is_file_command("$file") and not is_file_command("$file-response/x")
    fin = parse_command(f"$file-async/my-file-001/fin/3/{HEX.upper()}", b"")
    assert (fin.kind, fin.mode, fin.size, fin.checksum) == ("fin", "async", 3, bytes.fromhex(HEX))
    assert parse_command("$file/f/fin/3", b"").checksum is None
    seg = parse_command(f"$file/f/7/{HEX}", b"abc")
    assert (seg.kind, seg.offset, seg.checksum) == ("segment", 7, bytes.fromhex(HEX))
    assert parse_command("$file/f/abort", b"").kind == "abort"
    assert parse_command("$file/🌝/init", b'{"name": "a"}').file_id == "🌝"


@pytest.mark.parametrize(
    "name", [".", "..", "../nice", "/etc/passwd", "A" * 1000, "a:b", "a\\b", "x\x00", ""]
)
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(Refused) as refused:
        decode_filemeta(json.dumps({"name": name}).encode())
    assert refused.value.reason == "invalid_filemeta"


@pytest.mark.parametrize("name", ["146%", "🌚", "中文.txt", ".".join(["LONG"] * 48)])
def test_nasty_names_accepted(name: str) -> None:
    assert decode_filemeta(json.dumps({"name": name}).encode())["name"] == name


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"foo": "bar"}', "invalid_filemeta"),  # t_invalid_meta: unknown field, no name
        (b'{"name": "a", "foo": 1}', "invalid_filemeta"),
        (b'{"name": "a", "size": -1}', "invalid_filemeta"),
        (b'{"name": "a", "segments_ttl": 0}', "invalid_filemeta"),
        (b'{"name": "a", "checksum": "abc"}', "invalid_filemeta"),
        (b"{oops;", "invalid_filemeta_json"),
    ],
)
def test_invalid_filemeta(payload: bytes, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        decode_filemeta(payload)
    assert refused.value.reason == reason


def test_filemeta_nulls_dropped_and_checksum_decoded() -> None:
    meta = decode_filemeta(json.dumps({"name": "a", "checksum": HEX, "user_data": None}).encode())
    assert meta == {"name": "a", "checksum": bytes.fromhex(HEX)}


def test_escaped_ids_stay_one_directory() -> None:
    for raw in (".", "..", "../..", "/etc/passwd", "a\\b", "x\x01"):
        esc = escape_filename(raw)
        assert "/" not in esc and "\\" not in esc and esc not in (".", "..")
    assert escape_filename("146%") == "146%25" and escape_filename("my-file-001") == "my-file-001"


def test_response_payload() -> None:
    assert json.loads(response_payload("$file/f/init", 3, "filemeta_conflict")) == {
        "vsn": "0.1",
        "topic": "$file/f/init",
        "packet_id": 3,
        "reason_code": 0x80,
        "reason_description": "filemeta_conflict",
    }
    assert json.loads(response_payload("t", 1, None))["reason_description"] == "success"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_conflict_touch_and_ttl() -> None:
    clock = Clock()
    store = SegmentStore(clock, min_ttl=300, max_ttl=86400)
    key = ("c", "f")
    meta = {"name": "a", "segments_ttl": 600}
    assert store.store_filemeta(key, meta, None) is None
    assert store.store_filemeta(key, {**meta, "size": 1}, None) == "filemeta_conflict"
    clock.now += 500
    assert store.store_filemeta(key, dict(meta), None) is None  # touched: lives 600 s more
    assert store.store_segment(key, 0, b"ab", None) is None
    clock.now += 599
    assert store.coverage(key, 2) == [b"ab"]
    clock.now += 1
    assert store.coverage(key, 2) is None and store.filemeta(key) is None
    assert store.store_filemeta(key, {"name": "b"}, None) is None  # a new transfer now
    assert store.ttl(key) == 86400


def test_store_ttl_clamped_and_disk_errors() -> None:
    store = SegmentStore(Clock(), min_ttl=300, max_ttl=86400)
    store.store_filemeta(("c", "short"), {"name": "a", "segments_ttl": 10}, None)
    store.store_filemeta(("c", "long"), {"name": "a", "segments_ttl": 7 * 86400}, None)
    assert (store.ttl(("c", "short")), store.ttl(("c", "long"))) == (300, 86400)
    assert store.store_segment(("c", "x"), 0, b"a", "enospc") == "enospc"
    assert store.store_filemeta(("c", "x"), {"name": "a"}, "edquot") == "edquot"
    assert (
        store.store_filemeta(("c", "long"), {"name": "a", "segments_ttl": 7 * 86400}, "enospc")
        is None
    )


def test_coverage_any_order_overlaps_and_gaps() -> None:
    store = SegmentStore(Clock())
    key = ("c", "f")
    store.store_filemeta(key, {"name": "a"}, None)
    for off, data in ((6, b"ghi"), (0, b"abc"), (2, b"cdefg"), (3, b"def"), (4, b"")):
        store.store_segment(key, off, data, None)
    assert b"".join(store.coverage(key, 9) or []) == b"abcdefghi"
    assert store.coverage(key, 10) is None
    assert store.coverage(("c", "none"), 0) is None  # no filemeta: incomplete
