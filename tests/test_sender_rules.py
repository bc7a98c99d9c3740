"""The sender's SPEC 7.1 rules, pure: safe names, compact user_data, segment cap, resume state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.schema import ConfigError
from agent.sync.parcel import Parcels, compact_user_data, encoded_size, manifest_bytes
from agent.transfer import emqx
from agent.transfer import protocol as p
from agent.transfer.resume import ResumeState, prune_done
from agent.transfer.sender import SendSettings
from tests.emqx.commands import encode_filemeta, filename_problem, packet_size, s3_headers

NASTY = [
    "ZFY0012345_007_20261121093000_0001.MP4",
    ".",
    "..",
    ".hidden.MP4",
    "a/b.MP4",
    "a\\b.MP4",
    "C:clip.MP4",
    "tab\there.MP4",
    "del\x7f.MP4",
    "c1\x85control.MP4",
    "50%.MP4",
    "..MP4",
    "执法记录仪" * 20 + ".MP4",  # 304 bytes of UTF-8
    "x" * 300,
    "manifest.json",
]


@pytest.mark.parametrize("name", NASTY)
def test_every_name_is_sent_as_one_emqx_accepts(name: str) -> None:
    safe = emqx.safe_name(name)
    assert filename_problem(safe) is None, (name, safe)  # EMQX's own rules (tests/emqx)
    p.check_name(safe)  # and our receiver's
    manifest = emqx.manifest_name(name)
    assert filename_problem(manifest) is None and manifest.endswith(".manifest.json")
    p.check_name(manifest)
    try:
        p.check_name(name)
    except p.ProtocolError:
        return
    if filename_problem(name) is None and "%" not in name:
        assert safe == name, "a name both sides accept is sent unchanged"


def test_names_that_differ_stay_apart() -> None:
    assert emqx.safe_name("a/b.MP4") != emqx.safe_name("a\\b.MP4")
    assert emqx.safe_name("x" * 300).startswith("x" * 100)


def manifest_with_notes(n: int, officer: str = "王警官") -> dict:
    notes = [
        {
            "note_id": f"n-{i:04d}",
            "type": "gap",
            "duration_s": 61.5,
            "explanations": [{"author": officer, "text": "换电池，记录仪在车上充电。" * 20}],
        }
        for i in range(n)
    ]
    return {
        "dock_id": "dock-01",
        "device_id": "ZFY0012345",
        "officer_id": "007",
        "sha256": "a" * 64,
        "size": 123456789,
        "recorded_start": "2026-11-21T09:30:00+08:00",
        "custody_seq": 123456,
        "custody_hash": "b" * 64,
        "notes": notes,
        "file_name": "ZFY0012345_007_20261121093000_0001.MP4",
    }


def test_compact_user_data_fits_s3_with_any_manifest() -> None:
    manifest = manifest_with_notes(50)
    assert len(manifest_bytes(manifest)) > 20_000, "the full manifest is far over S3's 2 KB"
    data = compact_user_data(manifest, "c" * 64)
    data["dock_sig"] = "d" * 64
    assert encoded_size(data) <= 1024
    assert data["manifest_sha256"] == "c" * 64 and data["custody_hash"] == "b" * 64
    assert "notes" not in data
    meta = {"name": "x.MP4", "size": 1, "expire_at": 2_000_000_000, "user_data": data}
    headers = s3_headers(("dock-01", "a" * 64), meta)  # as EMQX's S3 exporter builds them
    assert sum(len(k) + len(v.encode()) for k, v in headers.items()) <= 2048
    assert json.loads(encode_filemeta(meta))["user_data"] == data


def test_compact_user_data_cuts_hostile_ids_to_fit() -> None:
    manifest = manifest_with_notes(0)
    manifest["officer_id"] = "警" * 5000  # from a recorder's file name: not ours to trust
    manifest["device_id"] = "D" * 5000
    data = compact_user_data(manifest, "c" * 64)
    data["dock_sig"] = "d" * 64
    assert encoded_size(data) <= 1024
    assert data["sha256"] == "a" * 64 and data["custody_seq"] == 123456


def test_segment_size_is_capped_below_emqx_packet_limit() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.segment_bytes = 1048576"):
        parse_config({"dock": {"id": "d"}, "mqtt": {"segment_bytes": 1_048_576}})
    top = parse_config({"dock": {"id": "d"}, "mqtt": {"segment_bytes": emqx.MAX_SEGMENT_BYTES}})
    seg = top.mqtt.segment_bytes
    fid = "f" * 64
    topic = p.segment_topic("$file", fid, 10**15, fid)  # a 1 PB offset: the longest topic
    reply = p.response_topic("c" * 128)
    assert packet_size(topic, b"\0" * seg, reply, b"\0" * 16) <= emqx.MAX_PACKET_BYTES


def test_puback_mode_needs_upstream_emqx() -> None:
    with pytest.raises(
        ConfigError, match=r"mqtt\.ack_mode = 'puback': a PUBACK carries no receipt"
    ):
        parse_config({"dock": {"id": "d"}, "mqtt": {"ack_mode": "puback"}})
    emqx = {"ack_mode": "puback", "upstream": "emqx"}
    parse_config({"dock": {"id": "d"}, "mqtt": emqx, "policy": {"delete_from_recorder": "never"}})
    with pytest.raises(ValueError, match="segments_ttl_s"):
        SendSettings(segments_ttl_s=7 * 86400)


KEY = {"client_id": "dock-01", "file_id": "f" * 64, "size": 10, "segment_bytes": 4}


def test_init_payload_is_fixed_at_the_first_attempt(tmp_path: Path) -> None:
    state = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    assert state.fix_init(b'{"first":1}') == b'{"first":1}'
    state.ack(0)
    state.save()
    again = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    assert again.fix_init(b'{"second":2}') == b'{"first":1}' and again.acked == {0}
    again.reset()
    after_fail = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    assert after_fail.acked == set() and after_fail.init == b'{"first":1}'
    other = ResumeState.load(tmp_path, KEY | {"segment_bytes": 8}, 0.0, 3600)
    assert other.acked == set() and other.init == b'{"first":1}', "only offsets need the size"


def test_acknowledged_offsets_older_than_segments_ttl_are_dropped(tmp_path: Path) -> None:
    state = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    state.fix_init(b"{}")
    state.ack(0)
    state.ack(4)
    state.save()
    body = json.loads(state.path.read_text())
    body["acked_since"] = time.time() - 3601
    state.path.write_text(json.dumps(body))
    old = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    assert old.acked == set(), "EMQX may have collected them: resend all"
    assert old.init == b"{}"


def test_a_finished_transfer_keeps_only_its_init_until_it_expires(tmp_path: Path) -> None:
    state = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    payload = json.dumps({"name": "c", "expire_at": int(time.time()) + 60}).encode()
    state.fix_init(payload)
    state.ack(0)
    state.finish()
    assert list(tmp_path.glob("*.json")) == []
    again = ResumeState.load(tmp_path, KEY | {"segment_bytes": 8}, 0.0, 3600)
    assert again.init == payload and again.acked == set(), "sent again: same init, all segments"
    assert prune_done(tmp_path) == 0
    assert prune_done(tmp_path, now=time.time() + 61) == 1
    assert ResumeState.load(tmp_path, KEY, 0.0, 3600).init is None


def test_a_damaged_saved_init_is_not_sent(tmp_path: Path) -> None:
    state = ResumeState.load(tmp_path, KEY, 0.0, 3600)
    state.fix_init(b"{}")
    body = json.loads(state.path.read_text())
    body["init"] = "{not json"
    state.path.write_text(json.dumps(body))
    assert ResumeState.load(tmp_path, KEY, 0.0, 3600).init is None


def test_a_clip_sent_again_goes_with_its_first_manifest(tmp_path: Path) -> None:
    parcels = Parcels(tmp_path)
    first = parcels.prepare("c" * 64, lambda: {"notes": ["first"]})
    parcels.clip_acked("c" * 64)
    parcels.done("c" * 64)
    again = parcels.prepare("c" * 64, lambda: {"notes": ["first", "explained later"]})
    assert again.manifest_sha256 == first.manifest_sha256 and again.user_data == first.user_data
    assert not again.clip_acked, "the clip itself goes again"
    parcels.done("c" * 64)
    assert parcels.prune(now=time.time() + 29 * 86400) == 0
    assert parcels.prune(now=time.time() + 31 * 86400) == 1
    fresh = parcels.prepare("c" * 64, lambda: {"notes": ["first", "explained later"]})
    assert fresh.manifest_sha256 != first.manifest_sha256
