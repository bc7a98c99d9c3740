"""Helpers for the file-transfer tests: clients on the test broker, a raw command sender, files.

Also a fixture plugin (`pytest_plugins = ["tests.transfer_kit"]`): `broker` (one Mosquitto per
module), `receiver` (on the module's own `store` fixture) and `dock` (a RawSender to it).
"""

from __future__ import annotations

import hashlib
import os
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.mqtt.connection import MqttConnection
from agent.transfer import protocol as p
from agent.transfer.receiver.partfile import DONE_INIT
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import FileSender, SendSettings
from agent.transfer.signing import Signer
from tests.broker import Broker, running_broker
from tests.paho_link import PahoLink


def random_file(path: Path, size: int) -> str:
    """A file of os.urandom bytes; returns its SHA-256."""
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def start_receiver(
    broker: Broker, store: Path, cls: type[Receiver] = Receiver, **options: Any
) -> Receiver:
    """A started receiver on the test broker, subscribed (`options` go to its constructor)."""
    rx = cls(store, MqttSection(host=broker.host, port=broker.port), **options)
    rx.start()
    assert rx.wait_subscribed(10), "receiver did not subscribe"
    return rx


def connect(broker: Broker, client_id: str, max_inflight: int = 20) -> tuple[mqtt.Client, PahoLink]:
    """A plain paho v5 client wrapped as a Transport, connected and looping: a bare peer (a
    hostile client, a spy); a dock's FileSender runs over `dock_connection`."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(max_inflight)
    client.reconnect_delay_set(0.1, 0.5)
    link = PahoLink(client)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert link.wait_connected(10)
    return client, link


def dock_connection(broker: Broker, client_id: str) -> MqttConnection:
    """The dock's own MQTT connection (agent.mqtt.connection) to the test broker, connected.

    Its session ends with it (no messages for an earlier test with the same client id) and it
    reconnects within half a second; everything else is the daemon's policy.
    """
    cfg = MqttSection(host=broker.host, port=broker.port)
    conn = MqttConnection(cfg, client_id, backoff=(0.1, 0.5), session_expiry_s=0)
    conn.start()
    assert conn.wait_connected(10), "the dock's connection did not connect"
    return conn


def dock_sender(
    broker: Broker,
    client_id: str,
    state_dir: Path,
    settings: SendSettings,
    signer: Signer | None = None,
) -> tuple[MqttConnection, FileSender]:
    """A FileSender over the dock's own connection, once the broker granted its answers' topic."""
    conn = dock_connection(broker, client_id)
    sender = FileSender(conn, client_id, state_dir, settings, signer)
    assert conn.wait_subscribed(p.response_topic(client_id), 10), "answers' topic not granted"
    return conn, sender


def close(client: mqtt.Client | MqttConnection) -> None:
    """Disconnect and stop a client's loop (the dock's connection: stop it)."""
    if isinstance(client, MqttConnection):
        client.stop()
        return
    client.disconnect()
    client.loop_stop()


class RawSender:
    """Publishes hand-made commands and waits for each answer (what a hostile dock could send).

    With `key`, it signs as a dock does (SPEC 11): inits, segments, and a nonce in every fin
    (kept in `last_nonce`); `client_id` is whose name it signs in (default its own).
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str = "raw-dock",
        max_inflight: int = 20,
        key: Ed25519PrivateKey | None = None,
        reply_as: str | None = None,
    ) -> None:
        self.client, self.link = connect(broker, client_id, max_inflight)
        self.reply_topic = p.response_topic(reply_as or client_id)
        self.answers: queue.Queue[tuple[bytes, p.Response]] = queue.Queue()
        self.link.subscribe(self.reply_topic, 1, self._on_answer)
        self.signer = None if key is None else Signer(reply_as or client_id, key)
        self.last_nonce = ""

    def _on_answer(self, msg: mqtt.MQTTMessage) -> None:
        self.answers.put((msg.properties.CorrelationData, p.parse_response(msg.payload)))

    def command(
        self,
        topic: str,
        payload: bytes = b"",
        reply_to: str | None = None,
        timeout: float = 5.0,
        user_property: tuple[str, str] | None = None,
    ) -> p.Response | None:
        """Publish one command and return its answer (None if none came)."""
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_to or self.reply_topic
        props.CorrelationData = corr
        if user_property is not None:
            props.UserProperty = [user_property]
        self.client.publish(topic, payload, qos=1, properties=props)
        try:
            while True:
                got_corr, resp = self.answers.get(timeout=timeout)
                if got_corr == corr:
                    return resp
        except queue.Empty:
            return None

    def init(self, file_id: str, name: str, size: int, user_data: Any = None) -> p.Response | None:
        """Send `init` for a file whose checksum is its id."""
        meta = p.FileMeta(name=name, size=size, checksum=file_id, user_data=user_data or {})
        if self.signer is not None and "dock_sig" not in meta.user_data:
            meta = self.signer.sign_meta(file_id, meta)
        return self.command(p.init_topic("$file", file_id), p.init_payload(meta))

    def segment(
        self,
        file_id: str,
        offset: int,
        data: bytes,
        checksum: str | None = None,
        sig: Any = None,
        timeout: float = 5.0,
    ) -> Any:
        """Send one segment (its true checksum unless one is given; signed with a key or `sig`)."""
        digest = checksum or p.sha256_hex(data)
        prop = None if sig is None else ("dock_sig", sig)
        if prop is None and self.signer is not None:
            prop = self.signer.segment_property(file_id, offset, data)
        return self.command(
            p.segment_topic("$file", file_id, offset, digest), data, None, 5.0, prop
        )

    def fin(self, file_id: str, size: int, checksum: str | None = None) -> p.Response | None:
        """Send `fin` (with a fresh nonce when signing)."""
        payload = b""
        if self.signer is not None:
            payload, self.last_nonce = self.signer.fin_payload()
        return self.command(p.fin_topic("$file", file_id, size, checksum or file_id), payload)

    def close(self) -> None:
        """Disconnect."""
        close(self.client)


def files_under(root: Path) -> list[str]:
    """Every regular file under `root`, relative, sorted; a complete transfer's .init.json aside."""
    return sorted(
        str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and f.name != DONE_INIT
    )


# ---- fixtures (used through pytest_plugins) ------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One private Mosquitto for the test module."""
    with running_broker(tmp_path_factory.mktemp("broker")) as b:
        yield b


@pytest.fixture
def receiver(broker: Broker, store: Path) -> Iterator[Receiver]:
    """A receiver on the module's `store`, stopped afterwards."""
    rx = start_receiver(broker, store)
    yield rx
    rx.stop()


@pytest.fixture
def dock(broker: Broker, receiver: Receiver) -> Iterator[RawSender]:
    """A raw command sender talking to `receiver`."""
    raw = RawSender(broker)
    yield raw
    raw.close()
