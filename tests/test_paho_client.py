"""agent.mqtt.paho_client: PUBLISH packets read as paho reads them, large ones intact end to end."""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import struct
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.mqtt import paho_client
from agent.mqtt.connection import MqttConnection
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.mqtt_helpers import FAST_BACKOFF, section

V5 = MQTTProtocolVersion.MQTTv5


def publish_packet(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 7, props: Properties | None = None
) -> tuple[int, bytes]:
    """(fixed header's first byte, the rest after the remaining length) of a PUBLISH."""
    packed = props.pack() if props is not None else b"\x00"
    head = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    return 0x30 | (qos << 1), head + packed + payload


def file_transfer_props() -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "$file-response/dock-7"
    props.CorrelationData = os.urandom(16)
    props.UserProperty = [("dock_sig", "ab" * 64), ("another", "é")]
    return props


def paho_reads(command: int, body: bytes) -> object:
    """What paho's own decoder makes of a packet: its fields, or the exception's type."""
    try:
        got = _packet.decode_publish(command, bytearray(body), V5)
    except Exception as exc:  # noqa: BLE001 - the kind of refusal is what is compared
        return type(exc)
    return (got.topic, got.mid, got.qos, got.dup, got.retain, str(got.properties), got.payload)


def ours(command: int, body: bytes) -> object:
    msg = paho_client.decode_publish(command, bytearray(body))
    if msg is None:
        return None
    topic = msg._topic  # the raw topic bytes, as paho's decoder returns them
    props = str(msg.properties)
    return (topic, msg.mid, msg.qos, msg.dup, msg.retain, props, bytes(msg.payload))


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("flags", [0, 0x08, 0x01])
def test_a_file_transfer_segment_decodes_as_paho_decodes_it(qos: int, flags: int) -> None:
    payload = os.urandom(256 * 1024)
    command, body = publish_packet(b"$file/ab/0/cd", payload, qos, props=file_transfer_props())
    command |= flags
    expected = paho_reads(command, body)
    assert isinstance(expected, tuple)
    assert ours(command, body) == expected
    assert expected[-1] == payload


def test_no_properties_and_no_payload_decode_as_paho_decodes_them() -> None:
    for command, body in (publish_packet(b"a/b", b""), publish_packet(b"", b"x", qos=0)):
        assert ours(command, body) == paho_reads(command, body)


def test_the_payload_is_the_packet_buffer_itself_not_a_copy() -> None:
    command, body = publish_packet(b"t", b"\x01" * 1000, props=file_transfer_props())
    packet = bytearray(body)
    msg = paho_client.decode_publish(command, packet)
    assert msg is not None and msg.payload is packet and packet == b"\x01" * 1000


def test_qos_2_is_left_to_paho() -> None:
    _, body = publish_packet(b"t", b"x", qos=1)
    assert paho_client.decode_publish(0x30 | (2 << 1), bytearray(body)) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=200),
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=199), st.integers(0, 255)), max_size=4
    ),
    qos=st.integers(min_value=0, max_value=1),
)
def test_any_damaged_packet_is_read_as_paho_reads_it_or_left_to_paho(
    cut: int, flips: list[tuple[int, int]], qos: int
) -> None:
    """Truncated or altered headers and properties: decoded here only as paho decodes them."""
    command, body = publish_packet(b"$file/x/0", b"payload!" * 8, qos, props=file_transfer_props())
    damaged = bytearray(body[: len(body) - cut] if cut < len(body) else b"")
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    got = ours(command, bytes(damaged))
    if got is not None:  # else paho decodes it: the same by construction
        assert got == paho_reads(command, bytes(damaged))


def test_a_property_running_past_the_properties_is_left_to_paho() -> None:
    """A correlation data whose length reaches into the payload: paho refuses, so do we."""
    props = b"\x09\x00\x10" + b"c" * 4  # claims 16 bytes, 4 are within the 7 bytes declared
    body = struct.pack("!H", 1) + b"t" + struct.pack("!H", 1) + bytes([len(props)]) + props
    body += b"p" * 64
    assert paho_client.decode_publish(0x32, bytearray(body)) is None
    assert paho_reads(0x32, body) is MalformedPacket


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    if mosquitto_binary() is None:
        pytest.skip("no mosquitto binary on this machine (scripts/setup.sh installs it)")
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.mark.parametrize("size", [0, 1, 300_000, 17 << 20])  # the last beyond preallocation
def test_messages_of_any_size_arrive_intact_through_a_real_broker(
    broker: Broker, size: int
) -> None:
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    rx = MqttConnection(section(broker), "paho-rx", backoff=FAST_BACKOFF, session_expiry_s=0)
    tx = MqttConnection(section(broker), "paho-tx", backoff=FAST_BACKOFF, session_expiry_s=0)
    rx.subscribe("big/#", 1, got.put)
    rx.start()
    tx.start()
    try:
        assert rx.wait_connected(5) and rx.wait_subscribed("big/#", 5) and tx.wait_connected(5)
        payload = os.urandom(size)
        props = file_transfer_props()
        assert tx.publish_and_wait("big/one", payload, timeout=30, properties=props)
        msg = got.get(timeout=30)
        assert hashlib.sha256(msg.payload).digest() == hashlib.sha256(payload).digest()
        assert len(msg.payload) == size and msg.topic == "big/one"
        assert msg.properties is not None
        assert msg.properties.CorrelationData == props.CorrelationData
        assert msg.properties.UserProperty == props.UserProperty
    finally:
        tx.stop()
        rx.stop()


def test_the_connection_sends_small_packets_at_once(broker: Broker) -> None:
    conn = MqttConnection(section(broker), "nodelay", backoff=FAST_BACKOFF, session_expiry_s=0)
    conn.start()
    try:
        assert conn.wait_connected(5)
        sock = conn.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        conn.stop()
