"""The file-transfer wire format (SPEC 7): topics, payloads, refusals, coverage."""

from __future__ import annotations

import json

import pytest

from agent.transfer import protocol as p
from agent.transfer.receiver.coverage import Coverage

FID = "ab" * 32
SUM = "cd" * 32


def test_topics_follow_spec() -> None:
    assert p.init_topic("$file", FID) == f"$file/{FID}/init"
    assert p.segment_topic("$file", FID, 262144, SUM) == f"$file/{FID}/262144/{SUM}"
    assert p.fin_topic("$file", FID, 10, SUM) == f"$file/{FID}/fin/10/{SUM}"
    assert p.response_topic("dock-01") == "$file-response/dock-01"


def test_commands_parse_back() -> None:
    meta = p.FileMeta("a.MP4", 5, FID, 100, 60, {"dock_id": "d"})
    init = p.parse_command("$file", p.init_topic("$file", FID), p.init_payload(meta))
    assert init == p.Init(FID, meta)
    seg = p.parse_command("$file", p.segment_topic("$file", FID, 7, SUM.upper()), b"x")
    assert seg == p.Segment(FID, 7, SUM)
    assert p.parse_command("$file", p.fin_topic("$file", FID, 5, SUM), b"") == p.Fin(FID, 5, SUM)


def test_init_payload_has_spec_fields() -> None:
    body = json.loads(p.init_payload(p.FileMeta("a", 1, FID, 2, 3, {"k": "v"})))
    assert body == {
        "name": "a",
        "size": 1,
        "checksum": FID,
        "expire_at": 2,
        "segments_ttl": 3,
        "user_data": {"k": "v"},
    }


@pytest.mark.parametrize(
    "topic",
    [
        "$file/" + "AB" * 32 + "/init",
        "$file/../init",
        "$file/" + "ab" * 31 + "/init",
        "$file/" + FID + "/-1/" + SUM,
        "$file/" + FID + "/01/" + SUM,
        "$file/" + FID + "/0/nothex",
        "$file/" + FID + "/fin/10",
        "$file/" + FID + "/fin/x/" + SUM,
        "$file/" + FID,
        "other/" + FID + "/init",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(p.ProtocolError) as exc:
        p.parse_command("$file", topic, b"{}")
    assert exc.value.reason_code != p.SUCCESS


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "a\\b",
        ".hidden",
        "..",
        "a\x00b",
        "x" * 241,
        "",
        "manifest.json",
        "a..b",
        "tab\there",
    ],
)
def test_escaping_names_are_refused(name: str) -> None:
    payload = json.dumps({"name": name, "size": 1, "checksum": FID}).encode()
    with pytest.raises(p.ProtocolError, match="name"):
        p.parse_init(payload)


def test_good_names_pass() -> None:
    for name in ("ZFY0012345_012345_20261121091403_0001.MP4", "录像.mp4", "a b.wav"):
        p.check_name(name)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"name": "a", "size": -1, "checksum": "%s"}' % FID.encode(),
        b'{"name": "a", "size": true, "checksum": "x"}',
        b'{"name": 5, "size": 1}',
        b'{"name": "a", "size": 1, "checksum": "%s", "user_data": 3}' % FID.encode(),
        b"\xff\xfe",
    ],
)
def test_malformed_init_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_init(payload)


def test_client_id_comes_only_from_a_response_topic() -> None:
    assert p.client_id_from_response_topic("$file-response/dock-01") == "dock-01"
    for bad in (
        None,
        "",
        "x/dock-01",
        "$file-response/",
        "$file-response/a/b",
        "$file-response/..",
        "$file-response/.x",
        "$file-response/#",
    ):
        assert p.client_id_from_response_topic(bad) is None


def test_response_round_trip_has_emqx_shape() -> None:
    resp = p.Response(
        topic=f"$file/{FID}/init", packet_id=3, reason_code=0, reason_description="ok"
    )
    body = json.loads(p.response_payload(resp))
    assert set(body) == {"vsn", "topic", "packet_id", "reason_code", "reason_description"}
    assert body["vsn"] == "0.1"
    assert p.parse_response(p.response_payload(resp)) == resp
    with pytest.raises(p.ProtocolError):
        p.parse_response(b'{"vsn": "0.1"}')


def test_coverage_merges_and_survives_json() -> None:
    cov = Coverage()
    cov.add(10, 20)
    cov.add(0, 10)
    cov.add(30, 40)
    assert cov.to_json() == [[0, 20], [30, 40]]
    assert cov.covers(5, 20) and not cov.covers(15, 35)
    cov.add(20, 30)
    assert Coverage.from_json(cov.to_json()).covers(0, 40)
    assert Coverage.from_json("junk").held() == 0


def test_emqx_requests_parse_with_optional_checksums_both_prefixes_and_abort() -> None:
    meta = b'{"name": "test.txt", "size": 3}'
    assert p.parse_request("$file", "$file/my-file-001/init", meta) == (
        False,
        p.Init("my-file-001", p.FileMeta("test.txt", 3, "")),
    )
    assert p.parse_request("$file", "$file-async/f/7", b"x") == (True, p.Segment("f", 7, None))
    assert p.parse_request("$file", f"$file/f/7/{SUM.upper()}", b"x")[1] == p.Segment("f", 7, SUM)
    assert p.parse_request("$file", "$file/f/fin/3", b"")[1] == p.Fin("f", 3, None)
    assert p.parse_request("$file", f"$file-async/f/fin/3/{SUM}", b"")[1] == p.Fin("f", 3, SUM)
    assert p.parse_request("$file", "$file/f/abort", b"")[1] == p.Abort("f")
    assert p.fin_topic("$file", "f", 3, None) == "$file/f/fin/3"
    assert p.segment_topic("$file", "f", 0, None) == "$file/f/0"
    assert p.abort_topic("$file", "f") == "$file/f/abort"
    for bad in ("$file//init", "$file/" + "x" * 256 + "/init", "$file-x/f/init", "$file/f/a/b/c"):
        with pytest.raises(p.ProtocolError):
            p.parse_request("$file", bad, meta)


def test_deeply_nested_json_is_refused_not_raised() -> None:
    deep = b"[" * 100_000
    with pytest.raises(p.ProtocolError):
        p.parse_init(b'{"name": "a", "size": 1, "user_data": {"x": ' + deep + b"}")
    with pytest.raises(p.ProtocolError):
        p.parse_response(deep)


def test_receipt_travels_only_when_given_and_no_room_includes_emqx_names() -> None:
    plain = p.Response(topic="t", packet_id=1, reason_code=0, reason_description="")
    assert "receipt" not in json.loads(p.response_payload(plain))
    signed = p.Response(topic="t", packet_id=1, reason_code=0, reason_description="", receipt="ab")
    assert p.parse_response(p.response_payload(signed)).receipt == "ab"
    assert p.no_room(p.Response("t", 1, p.QUOTA_EXCEEDED, "x"))
    assert p.no_room(p.Response("t", 1, p.UNSPECIFIED_ERROR, p.ENOSPC))
    assert p.no_room(p.Response("t", 1, p.UNSPECIFIED_ERROR, p.EDQUOT))
    assert not p.no_room(p.Response("t", 1, p.UNSPECIFIED_ERROR, p.FILEMETA_CONFLICT))
    assert not p.no_room(None)
