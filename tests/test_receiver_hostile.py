"""The receiver against hostile clients on a real Mosquitto (SPEC 11): it refuses and keeps serving."""

from __future__ import annotations

import json
import os
import queue
import time
import uuid
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transfer import protocol as p
from tests.broker import Broker
from tests.transfer_kit import RawSender, files_under

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker, receiver, dock

SEG = 4096


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def pipelined(
    raw: RawSender, commands: list[tuple[str, bytes]], timeout: float = 60.0
) -> list[p.Response | None]:
    """Publish every command at once, then collect the answers (None where none came)."""
    corrs = []
    for topic, payload in commands:
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = raw.reply_topic
        props.CorrelationData = corr
        raw.client.publish(topic, payload, qos=1, properties=props)
        corrs.append(corr)
    got: dict[bytes, p.Response] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(corrs) and time.monotonic() < deadline:
        try:
            corr, resp = raw.answers.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        got[corr] = resp
    return [got.get(c) for c in corrs]


def legitimate_transfer_works(broker: Broker, store: Path, client_id: str = "dock-ok") -> None:
    """A small, honest transfer from another dock completes byte for byte."""
    raw = RawSender(broker, client_id)
    try:
        data = os.urandom(2 * SEG + 7)
        fid = p.sha256_hex(data)
        assert raw.init(fid, "clip.MP4", len(data), {"sha256": fid}).ok  # type: ignore[union-attr]
        for off in range(0, len(data), SEG):
            assert raw.segment(fid, off, data[off : off + SEG]).ok
        assert raw.fin(fid, len(data)).ok  # type: ignore[union-attr]
        assert (store / client_id / fid / "clip.MP4").read_bytes() == data
    finally:
        raw.close()


def test_differing_reinit_is_refused_and_the_first_transfer_completes_with_its_manifest(
    broker: Broker, dock: RawSender, store: Path
) -> None:
    data = os.urandom(4 * SEG)
    fid = p.sha256_hex(data)
    first = {"dock_id": "raw-dock", "sha256": fid}
    assert dock.init(fid, "clip.MP4", len(data), first).ok  # type: ignore[union-attr]
    assert dock.segment(fid, 0, data[:SEG]).ok
    forged = dock.init(fid, "clip.MP4", len(data), {"dock_id": "forged"})
    assert forged is not None and forged.reason_code == p.UNSPECIFIED_ERROR
    assert forged.reason_description == p.FILEMETA_CONFLICT
    emptied = dock.init(fid, "clip.MP4", 0, first)
    assert emptied is not None and emptied.reason_description == p.FILEMETA_CONFLICT
    assert dock.init(fid, "clip.MP4", len(data), first).ok, "an identical re-init is fine"  # type: ignore[union-attr]
    for off in range(SEG, len(data), SEG):
        assert dock.segment(fid, off, data[off : off + SEG]).ok, "segments still fit the size"
    assert dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
    held = store / "raw-dock" / fid
    assert (held / "clip.MP4").read_bytes() == data
    assert json.loads((held / "manifest.json").read_text()) == first
    late = dock.init(fid, "clip.MP4", len(data), {"dock_id": "forged"})
    assert late is not None and late.reason_description == p.FILEMETA_CONFLICT
    assert json.loads((held / "manifest.json").read_text()) == first, "done stays done"
    assert dock.init(fid, "clip.MP4", len(data), first).ok  # type: ignore[union-attr]


def test_huge_init_size_is_refused_and_the_receiver_still_serves(
    broker: Broker, dock: RawSender, store: Path
) -> None:
    fid = p.sha256_hex(b"huge")
    payload = json.dumps({"name": "huge.MP4", "size": 10**30, "checksum": fid}).encode()
    resp = dock.command(p.init_topic("$file", fid), payload)
    assert resp is not None and not resp.ok and "max_file_bytes" in resp.reason_description
    assert files_under(store) == []
    legitimate_transfer_works(broker, store)


def test_segment_at_offset_beyond_any_file_is_refused_and_the_receiver_still_serves(
    broker: Broker, dock: RawSender, store: Path
) -> None:
    fid = p.sha256_hex(b"x" * SEG)
    assert dock.init(fid, "clip.MP4", SEG).ok  # type: ignore[union-attr]
    for offset in (9_300_000_000_000_000_000, 9_223_372_036_854_775_807, SEG):
        resp = dock.command(f"$file/{fid}/{offset}/{p.sha256_hex(b'x')}", b"x")
        assert resp is not None and resp.reason_code == p.UNSPECIFIED_ERROR, offset
        assert "beyond size" in resp.reason_description, "0x80, never 0x97 (no room)"
    legitimate_transfer_works(broker, store)
    assert dock.segment(fid, 0, b"x" * SEG).ok, "the worker of that transfer lives"


def test_deeply_nested_json_is_refused_and_the_receiver_still_serves(
    broker: Broker, dock: RawSender, store: Path
) -> None:
    fid = p.sha256_hex(b"nested")
    for deep in (b"[" * 200_000, b'{"a":' * 100_000):
        payload = b'{"name": "a.MP4", "size": 1, "user_data": ' + deep
        resp = dock.command(p.init_topic("$file", fid), payload)
        assert resp is not None and resp.reason_code == p.PAYLOAD_FORMAT_INVALID
    assert files_under(store) == []
    legitimate_transfer_works(broker, store)
