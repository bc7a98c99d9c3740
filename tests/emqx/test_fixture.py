"""The EMQX-behaving fixture against a real Mosquitto, driven by commands written from EMQX's docs.

Topics are built by hand here (`$file/{file_id}/...`), never with agent.transfer.protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Broker, running_broker
from tests.emqx.clients import emqx_ft_client, examples_client
from tests.emqx.fixture import EmqxFileTransfer, Options

pytest_plugins = ["tests.emqx.fixture"]  # the emqx_ft fixture

CLIENT = "dock-7"
REPLY = f"$file-response/{CLIENT}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One private Mosquitto for the module."""
    with running_broker(tmp_path_factory.mktemp("broker")) as b:
        yield b


class Requester:
    """A paho v5 client sending commands with a Response Topic and Correlation Data."""

    def __init__(self, broker: Broker, reply_to: str = REPLY) -> None:
        self.reply_to = reply_to
        self.answers: queue.Queue[tuple[bytes, dict[str, Any], float]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"req-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, m: self.answers.put(
            (getattr(m.properties, "CorrelationData", b""), json.loads(m.payload), time.monotonic())
        )
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(reply_to, 1)
        assert subscribed.wait(5), "requester did not subscribe"

    def send(self, topic: str, payload: bytes = b"") -> bytes:
        """Publish one command; returns its correlation data."""
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_to
        props.CorrelationData = corr
        self.client.publish(topic, payload, qos=1, properties=props)
        return corr

    def answer(self, corr: bytes, timeout: float = 5.0) -> tuple[dict[str, Any], float]:
        """The answer carrying `corr` and when it arrived, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            got, body, at = self.answers.get(timeout=max(0.01, deadline - time.monotonic()))
            if got == corr:
                return body, at

    def request(self, topic: str, payload: bytes = b"") -> dict[str, Any]:
        """Send one command and return its answer's payload."""
        return self.answer(self.send(topic, payload))[0]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def req(broker: Broker) -> Iterator[Requester]:
    r = Requester(broker)
    yield r
    r.close()


def meta(data: bytes, name: str = "clip.MP4", **extra: Any) -> bytes:
    """An init payload as EMQX's docs show it."""
    body = {"name": name, "size": len(data), "checksum": hashlib.sha256(data).hexdigest()}
    body.update(extra)
    return json.dumps(body).encode()


def upload(req: Requester, file_id: str, data: bytes, seg: int = 1000) -> list[dict[str, Any]]:
    """Send init and every segment (with its checksum); returns their answers."""
    out = [req.request(f"$file/{file_id}/init", meta(data, expire_at=2_000_000_000))]
    for off in range(0, len(data), seg):
        chunk = data[off : off + seg]
        digest = hashlib.sha256(chunk).hexdigest()
        out.append(req.request(f"$file/{file_id}/{off}/{digest}", chunk))
    return out


def test_well_formed_transfer_answered_and_stored(
    emqx_ft: EmqxFileTransfer, req: Requester
) -> None:
    data = os.urandom(4500)
    digest = hashlib.sha256(data).hexdigest()
    answers = upload(req, "clip-1", data)
    init_topic = "$file/clip-1/init"
    assert answers[0]["topic"] == init_topic
    corr = req.send(f"$file/clip-1/fin/{len(data)}/{digest}")
    fin, _at = req.answer(corr)
    for a in [*answers, fin]:
        assert set(a) == {"vsn", "topic", "packet_id", "reason_code", "reason_description"}
        assert (a["vsn"], a["reason_code"], a["reason_description"]) == ("0.1", 0, "success")
        assert isinstance(a["packet_id"], int) and a["packet_id"] > 0
    assert fin["topic"] == f"$file/clip-1/fin/{len(data)}/{digest}"
    export = emqx_ft.wait_export(CLIENT, "clip-1")
    assert export.path.read_bytes() == data and export.sha256 == digest
    assert export.path == emqx_ft.root / "exports" / CLIENT / "clip-1" / "clip.MP4"
    assert emqx_ft.conflicts == [] and len(emqx_ft.inits) == 1
    assert json.loads(export.s3_metadata["filemeta"])["name"] == "clip.MP4"


def test_user_data_kept_with_the_export(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = b"evidence" * 100
    user_data = {"dock_id": "d1", "notes": ["one", "two"]}
    assert req.request("$file/f2/init", meta(data, user_data=user_data))["reason_code"] == 0
    assert req.request("$file/f2/0", data)["reason_code"] == 0  # no segment checksum: allowed
    assert req.request(f"$file-async/f2/fin/{len(data)}")["reason_code"] == 0  # init's checksum
    export = emqx_ft.wait_export(CLIENT, "f2")
    assert export.user_data == user_data and export.path.read_bytes() == data


def test_differing_reinit_is_filemeta_conflict(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = b"x" * 10
    first = {"name": "a.MP4", "size": 10, "expire_at": 1_900_000_000, "user_data": {"n": 1}}
    assert req.request("$file/f3/init", json.dumps(first).encode())["reason_code"] == 0
    same_meaning = json.dumps(dict(reversed(list(first.items()))), indent=2).encode()
    assert req.request("$file/f3/init", same_meaning)["reason_code"] == 0
    for change in ({"expire_at": 1_900_000_001}, {"user_data": {"n": 2}}, {"segments_ttl": 600}):
        got = req.request("$file/f3/init", json.dumps({**first, **change}).encode())
        assert (got["reason_code"], got["reason_description"]) == (0x80, "filemeta_conflict")
    assert len(emqx_ft.inits) == 5 and len(emqx_ft.conflicts) == 3
    assert (
        emqx_ft.conflicts[0].payload == json.dumps({**first, "expire_at": 1_900_000_001}).encode()
    )
    assert req.request("$file/f3/0", data)["reason_code"] == 0
    assert req.request("$file/f3/fin/10")["reason_code"] == 0, "the first init still holds"
    assert emqx_ft.wait_export(CLIENT, "f3").name == "a.MP4"


@pytest.mark.parametrize("emqx_ft", [{"time_scale": 0.01, "assembly_delay": 200}], indirect=True)
def test_fin_answered_after_assembly_delay(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = os.urandom(3000)
    upload(req, "slow", data)
    sent = time.monotonic()
    corr = req.send(f"$file/slow/fin/{len(data)}")
    time.sleep(1.0)  # deliberate: mid-assembly; a fresh one would answer 1 s after the first
    again = req.send(f"$file/slow/fin/{len(data)}")  # a resend joins the running assembly
    assert emqx_ft.export(CLIENT, "slow") is None and not emqx_ft.answers_to("$file/slow/fin/3000")
    first, at = req.answer(corr)
    second, at2 = req.answer(again)
    assert first["reason_code"] == 0 and second["reason_code"] == 0
    assert 1.9 <= at - sent < 3.5 and abs(at2 - at) < 0.5
    assert emqx_ft.export(CLIENT, "slow") is not None


@pytest.mark.parametrize(
    "emqx_ft",
    [{"time_scale": 0.01, "assembly_delay": 200, "assemble_timeout": 100}],
    indirect=True,
)
def test_fin_past_assemble_timeout(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = os.urandom(100)
    upload(req, "late", data)
    sent = time.monotonic()
    answer, at = req.answer(req.send("$file/late/fin/100"))
    assert (answer["reason_code"], answer["reason_description"]) == (0x80, "timeout")
    assert 0.9 <= at - sent < 1.8
    emqx_ft.wait_export(CLIENT, "late", timeout=3)
    assert req.request("$file/late/fin/100")["reason_code"] == 0, "exported meanwhile"


@pytest.mark.parametrize("emqx_ft", [{"time_scale": 0.005}], indirect=True)
def test_segments_forgotten_after_ttl(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = os.urandom(2000)
    for fid in ("kept", "lost"):
        body = meta(data, segments_ttl=10)  # below EMQX's minimum 300 s: 300 s (1.5 s here)
        assert req.request(f"$file/{fid}/init", body)["reason_code"] == 0
        for off in (0, 1000):
            assert req.request(f"$file/{fid}/{off}", data[off : off + 1000])["reason_code"] == 0
    emqx_ft.advance(100)  # past the 10 asked, within the 300 kept
    assert req.request("$file/kept/fin/2000")["reason_code"] == 0
    emqx_ft.advance(240)  # 340 EMQX seconds since the segments were written
    lost = req.request("$file/lost/fin/2000")
    assert (lost["reason_code"], lost["reason_description"]) == (0x80, "incomplete")
    assert emqx_ft.export(CLIENT, "lost") is None
    other = meta(data, name="other.MP4")
    assert req.request("$file/lost/init", other)["reason_code"] == 0, "its filemeta went too"


@pytest.mark.parametrize("emqx_ft", [{"disk_error": "enospc"}], indirect=True)
def test_enospc_mode(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = os.urandom(1500)
    answers = upload(req, "full", data)
    assert [a["reason_description"] for a in answers] == ["enospc"] * 3
    assert {a["reason_code"] for a in answers} == {0x80}
    emqx_ft.options.disk_error = None
    assert all(a["reason_code"] == 0 for a in upload(req, "full", data))
    emqx_ft.options.disk_error = "enospc"
    fin = req.request("$file/full/fin/1500")
    assert (fin["reason_code"], fin["reason_description"]) == (0x80, "enospc")
    emqx_ft.options.disk_error = None
    assert req.request("$file/full/fin/1500")["reason_code"] == 0


def test_refusals_carry_emqx_error_names(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = b"abc"
    bad = hashlib.sha256(b"other").hexdigest()
    assert req.request(f"$file/r/0/{bad}", data)["reason_description"] == "checksum_mismatch"
    assert req.request("$file/r/init", b"{oops")["reason_description"] == "invalid_filemeta_json"
    assert (
        req.request("$file/r/init", b'{"name": "a/b"}')["reason_description"] == "invalid_filemeta"
    )
    assert req.request("$file/r/fin/x")["reason_description"] == "invalid_size"
    assert req.request("$file/r/0", data)["reason_code"] == 0
    assert req.request("$file/r/fin/3")["reason_description"] == "incomplete", "no filemeta"
    assert req.request("$file/r/init", meta(data))["reason_code"] == 0
    assert req.request(f"$file/r/fin/3/{bad}")["reason_description"] == "internal_error"
    assert req.request("$file/r/abort")["reason_code"] == 0
    assert req.request("$file/r/fin/3")["reason_code"] == 0, "the init's checksum is right"


def test_any_response_topic_and_none(broker: Broker, emqx_ft: EmqxFileTransfer) -> None:
    other = Requester(broker, reply_to="replies/for/me")
    try:
        assert other.request("$file/q/init", meta(b"q"))["reason_code"] == 0
        assert emqx_ft.inits[-1].client == "replies/for/me"
    finally:
        other.close()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare", protocol=mqtt.MQTTv5)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    publisher.publish("$file/q/init", meta(b"q"), qos=1).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()
    deadline = time.monotonic() + 5
    while not emqx_ft.unheard and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [u.why for u in emqx_ft.unheard] == ["no response topic"]


def test_oversized_segment_unanswered(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    corr = req.send("$file/big/0", os.urandom(1_048_576))
    with pytest.raises(queue.Empty):
        req.answer(corr, timeout=1.0)
    assert [u.why for u in emqx_ft.unheard] == ["packet too large"]


@pytest.mark.parametrize("use_async", [False, True])
def test_emqx_ft_sample_client_completes(broker: Broker, tmp_path: Path, use_async: bool) -> None:
    path = tmp_path / "test-file.txt"
    path.write_bytes(os.urandom(5000))
    options = Options(anonymous_client="emqx-ft-1")
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx:
        sent = emqx_ft_client(
            broker.host,
            broker.port,
            path,
            "my-file-001",
            "emqx-ft-1",
            file_name="test-file.txt",
            use_async=use_async,
        )
        export = emqx.wait_export("emqx-ft-1", "my-file-001")
    prefix = "$file-async" if use_async else "$file"
    assert (
        sent.topics[0] == f"{prefix}/my-file-001/init"
        and sent.topics[-1] == f"{prefix}/my-file-001/fin/5000"
    )
    assert json.loads(sent.init_payload) == {
        "name": "test-file.txt",
        "size": 5000,
        "checksum": sent.sha256,
    }
    assert export.path.read_bytes() == path.read_bytes() and export.sha256 == sent.sha256
    assert all(a.ok and a.reply_topic == "$file-response/emqx-ft-1" for a in emqx.answers)


def test_examples_sample_client_completes(broker: Broker, tmp_path: Path) -> None:
    path = tmp_path / "report.bin"
    path.write_bytes(os.urandom(3500))
    options = Options(anonymous_client="python-mqtt-file-transfer-1")
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx:
        sent = examples_client(broker.host, broker.port, path, "my-file-001")
        export = emqx.wait_export("python-mqtt-file-transfer-1", "my-file-001")
    assert json.loads(sent.init_payload) == {"name": "report.bin", "size": 3500}
    assert sent.topics[1:5] == [f"$file/my-file-001/{o}" for o in (0, 1024, 2048, 3072)]
    assert sent.topics[-1] == f"$file/my-file-001/fin/3500/{sent.sha256}"
    assert export.path.read_bytes() == path.read_bytes()


def test_stopped_fixture_leaves_no_session(broker: Broker, tmp_path: Path) -> None:
    emqx = EmqxFileTransfer(broker, tmp_path / "emqx").start()
    emqx.stop()
    flags: queue.Queue[bool] = queue.Queue()
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=emqx.client_id, protocol=mqtt.MQTTv5)
    probe.on_connect = lambda _c, _u, f, _rc, _p: flags.put(f.session_present)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 60
    probe.connect(broker.host, broker.port, clean_start=False, properties=props)
    probe.loop_start()
    try:
        assert flags.get(timeout=5) is False, "a dead subscriber would queue every later command"
    finally:
        probe.disconnect()
        probe.loop_stop()


@pytest.mark.parametrize("emqx_ft", [{"s3_metadata_limit": 2048}], indirect=True)
def test_s3_metadata_limit(emqx_ft: EmqxFileTransfer, req: Requester) -> None:
    data = b"clip"
    notes = {"notes": ["a long explained note " * 5] * 20}
    assert req.request("$file/fat/init", meta(data, user_data=notes))["reason_code"] == 0
    assert req.request("$file/fat/0", data)["reason_code"] == 0
    fin = req.request("$file/fat/fin/4")
    assert (fin["reason_code"], fin["reason_description"]) == (0x80, "internal_error")
    assert (
        req.request("$file/lean/init", meta(data, user_data={"dock_id": "d1"}))["reason_code"] == 0
    )
    assert req.request("$file/lean/0", data)["reason_code"] == 0
    assert req.request("$file/lean/fin/4")["reason_code"] == 0
    lean = emqx_ft.wait_export(CLIENT, "lean")
    assert 0 < lean.s3_metadata_bytes <= 2048 and emqx_ft.export(CLIENT, "fat") is None
    assert json.loads(lean.s3_metadata["filemeta"])["user_data"] == {"dock_id": "d1"}
