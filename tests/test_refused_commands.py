"""The receiver's refusals of inits and segments, signed (SPEC 11): acted on at once, forged ones held.

Any broker client can answer a dock's command with a failure, so the dock holds an unproved
failure up to ack_timeout_s (10 s) for a proved success. The receiver now signs its refusal
of an init or a segment over that exact command (topic, payload, dock_sig) and its
correlation data; the dock acts on such a refusal at once and still holds every other one.
Real Mosquitto, the reference receiver, the dock's own MQTT connection; ack_timeout_s as shipped.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transfer import protocol as p
from agent.transfer.receiver import trustdir
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import SendSettings, TransferFailed
from agent.transfer.signing import Signer
from agent.trust import keys
from tests.broker import Broker, mosquitto_binary
from tests.transfer_kit import dock_sender, files_under, random_file, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker
pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

DOCK = "dock-r"
KEY = Ed25519PrivateKey.generate()
SETTINGS = SendSettings(segment_bytes=4096, max_inflight=4)  # ack_timeout_s 10, as shipped
PROMPT_S = 3.0  # every try of a refused command answered, well under one ack_timeout_s


def message(topic: str, payload: bytes, sig: str | None = None) -> Any:
    """A command as the receiver sees it (topic, payload, the dock_sig user property)."""
    props = SimpleNamespace(UserProperty=[] if sig is None else [("dock_sig", sig)])
    return SimpleNamespace(topic=topic, payload=payload, properties=props)


def test_only_centrals_refusal_of_exactly_that_command_is_acted_on_at_once() -> None:
    """Pure: the receiver's `signed` against the dock's `refused` / `segment_refused`."""
    central = Ed25519PrivateKey.generate()
    signer = Signer(DOCK, KEY, central.public_key())
    fid = "ab" * 32
    topic = p.init_topic("$file", fid)
    init = p.init_payload(signer.sign_meta(fid, p.FileMeta("c.MP4", 10, fid)))
    corr, other = uuid.uuid4().bytes, uuid.uuid4().bytes
    no = p.Response(topic, 1, p.NOT_AUTHORIZED, "no key")

    def refusal(
        msg: Any, key: Ed25519PrivateKey = central, client: str = DOCK, c: bytes = corr
    ) -> p.Response:
        return trustdir.signed(no, key, client, msg, c)

    assert signer.refused(topic, init, (corr, refusal(message(topic, init))))
    for forged in (
        refusal(message(topic, init), c=other),  # a refusal of another publish, replayed
        refusal(message(topic, init + b" ")),  # of a copy a broker client altered
        refusal(message(p.init_topic("$file", "cd" * 32), init)),  # of another file's init
        refusal(message(topic, init), client="dock-other"),  # of another dock's command
        refusal(message(topic, init), key=Ed25519PrivateKey.generate()),  # not central's key
        p.Response(topic, 1, p.NOT_AUTHORIZED, "no key", receipt="0" * 128),
        no,  # unsigned, as any broker client can send
    ):
        assert not signer.refused(topic, init, (corr, forged)), forged
    receipt = refusal(message(topic, init)).receipt
    recoded = p.Response(topic, 1, p.QUOTA_EXCEEDED, "x", receipt=receipt)
    assert not signer.refused(topic, init, (corr, recoded)), "signed for another reason code"

    data = b"segment bytes"
    digest = p.sha256_hex(data)
    seg_topic = p.segment_topic("$file", fid, 4096, digest)
    sig = signer.segment_property(fid, 4096, data)[1]

    def read() -> bytes:
        return data

    genuine = refusal(message(seg_topic, data, sig))
    assert signer.segment_refused("$file", fid, 4096, read, (corr, genuine))
    for forged in (
        refusal(message(seg_topic, data, "0" * 128)),  # a copy with its dock_sig spoiled
        refusal(message(seg_topic, data)),  # a copy without it
        refusal(message(seg_topic, data + b"!", sig)),  # a copy with other bytes
        refusal(message(seg_topic, data, sig), c=other),
    ):
        assert not signer.segment_refused("$file", fid, 4096, read, (corr, forged))
    assert not signer.segment_refused("$file", fid, 0, read, (corr, genuine)), "another offset"

    ok = p.Response(topic, 1, p.SUCCESS, "success")
    assert trustdir.signed(ok, central, DOCK, message(topic, init), corr) is ok, "no receipt"
    unsigned_signer = Signer(DOCK, KEY, None)  # central's key not enrolled: nothing is proved
    assert not unsigned_signer.refused(topic, init, (corr, refusal(message(topic, init))))


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """The receiver's dock_keys_dir, holding this dock's public key."""
    directory = tmp_path / "dock-keys"
    directory.mkdir()
    keys.write_public(directory / f"{DOCK}.pub", KEY.public_key(), DOCK)
    return directory


def central_signer(tmp_path: Path) -> Signer:
    """The dock's signer, knowing central's key (the receiver made it under tmp_path)."""
    return Signer(DOCK, KEY, keys.load_public(tmp_path / "receiver.pub"))


class Counting:
    """The dock's connection, counting the inits and segments it publishes; `on_segment` runs
    before the first segment is published."""

    def __init__(self, link: Any, on_segment: Any = None) -> None:
        self.link, self.on_segment = link, on_segment
        self.inits = self.segments = 0

    def publish(self, topic: str, payload: bytes, **kw: Any) -> Any:
        parts = topic.split("/")
        self.inits += parts[-1] == "init"
        if len(parts) == 4:
            if self.on_segment is not None and not self.segments:
                self.on_segment()
            self.segments += 1
        return self.link.publish(topic, payload, **kw)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> None:
        self.link.subscribe(topic_filter, qos, handler)

    def wait_connected(self, timeout: float) -> bool:
        return self.link.wait_connected(timeout)


def test_a_receiver_without_the_docks_key_refuses_every_init_at_once(
    broker: Broker, tmp_path: Path
) -> None:
    """Before: each of the 5 tries of the init waited ack_timeout_s, 50 s for one refused clip."""
    empty = tmp_path / "no-keys"
    empty.mkdir()
    rx = start_receiver(broker, tmp_path / "store", dock_keys_dir=empty)
    conn, sender = dock_sender(broker, DOCK, tmp_path / "state", SETTINGS, central_signer(tmp_path))
    counting = Counting(conn)
    sender.transport = sender.exchange.transport = counting
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 3 * 4096)
    began = time.monotonic()
    try:
        with pytest.raises(TransferFailed, match="reason code 135"):
            sender.send(src, fid, src.name, 3 * 4096, {"sha256": fid})
        took = time.monotonic() - began
    finally:
        conn.stop()
        rx.stop()
    assert counting.inits == SETTINGS.max_tries and counting.segments == 0
    assert took < PROMPT_S, f"{counting.inits} refused inits took {took:.1f} s"
    assert files_under(tmp_path / "store") == []


def test_a_key_revoked_mid_transfer_refuses_the_segments_at_once(
    broker: Broker, tmp_path: Path, keys_dir: Path
) -> None:
    """The receiver stops knowing the dock between its init and its first segment."""
    rx = start_receiver(broker, tmp_path / "store", dock_keys_dir=keys_dir)
    conn, sender = dock_sender(broker, DOCK, tmp_path / "state", SETTINGS, central_signer(tmp_path))
    counting = Counting(conn, on_segment=(keys_dir / f"{DOCK}.pub").unlink)
    sender.transport = sender.exchange.transport = counting
    src = tmp_path / "clip.MP4"
    size = 8 * 4096
    fid = random_file(src, size)
    began = time.monotonic()
    try:
        with pytest.raises(TransferFailed, match=r"segment at \d+: reason code 135"):
            sender.send(src, fid, src.name, size, {"sha256": fid})
        took = time.monotonic() - began
    finally:
        conn.stop()
        rx.stop()
    assert counting.inits == 1 and counting.segments >= SETTINGS.max_tries
    assert took < PROMPT_S, f"{counting.segments} refused segments took {took:.1f} s"
    held = tmp_path / "store" / DOCK / fid / ".partial" / "coverage.json"
    assert not held.exists() or json.loads(held.read_text()) == [], "no refused segment stored"


class Replayer:
    """A broker client that answers every command of the dock first, with a refusal central
    really signed (for a command it sent in the dock's name), before the receiver's answer
    to that command goes out (`answered`: the correlation data it has answered)."""

    def __init__(self, broker: Broker) -> None:
        self.answered: set[bytes] = set()
        self.changed = threading.Condition()
        self.recorded: p.Response | None = None
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="replayer", protocol=mqtt.MQTTv5
        )
        self._pending: dict[int, bytes] = {}  # message id -> the correlation it answers
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_puback
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([("$file/#", 1), (p.response_topic(DOCK), 1)])
        assert self._ready.wait(10)

    def record(self) -> p.Response:
        """A refusal central signs in the dock's name: an unsigned init sent as that dock."""
        fid = "ee" * 32
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = p.response_topic(DOCK)
        props.CorrelationData = b"replayer"
        body = p.init_payload(p.FileMeta("x.MP4", 1, fid))
        self.client.publish(p.init_topic("$file", fid), body, qos=1, properties=props)
        with self.changed:
            assert self.changed.wait_for(lambda: self.recorded is not None, 10)
        assert self.recorded is not None and self.recorded.receipt is not None
        return self.recorded

    def _on_message(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        corr = msg.properties.CorrelationData
        if msg.topic.startswith("$file-response/"):
            if corr == b"replayer":
                with self.changed:
                    self.recorded = p.parse_response(msg.payload)
                    self.changed.notify_all()
            return
        if self.recorded is None or "/fin/" in msg.topic:
            return
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = corr
        forged = p.Response(
            msg.topic, msg.mid, self.recorded.reason_code, "no key", receipt=self.recorded.receipt
        )
        reply_to = msg.properties.ResponseTopic
        info = client.publish(reply_to, p.response_payload(forged), 1, properties=props)
        with self.changed:
            self._pending[info.mid] = corr

    def _on_puback(self, _c: object, _u: object, mid: int, *_a: object) -> None:
        """The broker has it, so routed to the dock ahead of anything published after this."""
        with self.changed:
            corr = self._pending.pop(mid, None)
            if corr is not None:
                self.answered.add(corr)
                self.changed.notify_all()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AnsweringSecond(Receiver):
    """The reference receiver, answering each command only once the replayer has."""

    replayer: Replayer

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        first = topic == p.response_topic(DOCK) and "/fin/" not in resp.topic
        if first and correlation != b"replayer":
            with self.replayer.changed:
                self.replayer.changed.wait_for(lambda: correlation in self.replayer.answered, 5)
        super().send_response(topic, correlation, resp)


@pytest.fixture
def replayer(broker: Broker) -> Iterator[Replayer]:
    r = Replayer(broker)
    yield r
    r.close()


def test_a_signed_refusal_replayed_for_other_commands_costs_no_try(
    broker: Broker, tmp_path: Path, keys_dir: Path, replayer: Replayer
) -> None:
    rx = start_receiver(broker, tmp_path / "store", AnsweringSecond, dock_keys_dir=keys_dir)
    rx.replayer = replayer  # type: ignore[attr-defined]
    recorded = replayer.record()
    assert recorded.reason_code == p.NOT_AUTHORIZED
    conn, sender = dock_sender(broker, DOCK, tmp_path / "state", SETTINGS, central_signer(tmp_path))
    src = tmp_path / "clip.MP4"
    size = 8 * 4096
    fid = random_file(src, size)
    began = time.monotonic()
    try:
        result = sender.send(src, fid, src.name, size, {"sha256": fid})
        took = time.monotonic() - began
    finally:
        conn.stop()
        rx.stop()
    assert len(replayer.answered) >= 1 + size // 4096, "the replayer answered every init, segment"
    assert result.rounds == 1 and result.resends == 0, result
    assert took < PROMPT_S
    assert (tmp_path / "store" / DOCK / fid / src.name).read_bytes() == src.read_bytes()
