"""agent.mqtt.paho_read: packets taken from one read buffer, whatever the reads' boundaries."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from agent.mqtt import paho_client, paho_read


def packet(command: int, body: bytes) -> bytes:
    """A whole MQTT packet: command byte, remaining length, body."""
    length, head = len(body), bytearray([command])
    while True:
        digit, length = length % 128, length // 128
        head.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(head) + body


class Reading:
    """A client reading from one end of a socket pair; what it takes is recorded, not handled."""

    def __init__(self) -> None:
        self.client = paho_client.Client(
            CallbackAPIVersion.VERSION2, client_id="reader", protocol=MQTTProtocolVersion.MQTTv5
        )
        assert self.client._fast
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.client._sock = self.ours
        self.got: list[tuple[int, bytes]] = []
        self.client._packet_handle = self._handle  # type: ignore[method-assign]

    def _handle(self) -> MQTTErrorCode:
        got = self.client._in_packet
        self.got.append((got["command"], bytes(got["packet"])))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def read_all(self) -> MQTTErrorCode:
        return self.client.loop_read()

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def reading():  # type: ignore[no-untyped-def]
    r = Reading()
    yield r
    r.close()


def test_a_fixed_header_is_read_only_when_whole() -> None:
    buf = bytearray(packet(0x30, b"x" * 300))
    assert paho_read.fixed_header(buf, 0, 1) is None
    assert paho_read.fixed_header(buf, 0, 2) is None  # 300 takes two length bytes
    assert paho_read.fixed_header(buf, 0, 3) == (0x30, 300, 3)
    assert paho_read.fixed_header(bytearray(b"\x40\x02\x00\x07"), 0, 4) == (0x40, 2, 2)
    assert paho_read.fixed_header(bytearray(b"\xd0\x00"), 0, 2) == (0xD0, 0, 2)


def test_a_length_of_five_bytes_is_refused(reading: Reading) -> None:
    assert paho_read.fixed_header(bytearray(b"\x30\xff\xff\xff\xff"), 0, 5) == (0x30, -1, 0)
    reading.theirs.sendall(b"\x30\xff\xff\xff\xff\x01")
    assert reading.read_all() == MQTTErrorCode.MQTT_ERR_PROTOCOL


def test_many_small_packets_are_read_with_one_recv(reading: Reading) -> None:
    stream = [(0x40, b"\x00\x07"), (0x32, b"\x00\x01tx\x00\x00hello"), (0xD0, b"")] * 20
    reading.theirs.sendall(b"".join(packet(c, b) for c, b in stream))
    calls = []
    recv_into = reading.client._recv_into

    def counted(view: memoryview) -> int | MQTTErrorCode:
        calls.append(len(view))
        return recv_into(view)

    reading.client._recv_into = counted  # type: ignore[method-assign]
    assert reading.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert reading.got == stream  # every whole packet buffered, beyond paho's count of one
    assert len(calls) == 1


SIZES = [0, 1, 2, 127, 128, 5000, 65530, 65536, 70000, 300_000]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from(SIZES), max_size=8),
    cuts=st.lists(st.integers(1, 100_000), min_size=1, max_size=12),
)
def test_packets_come_out_whole_and_in_order_whatever_the_reads(
    sizes: list[int], cuts: list[int]
) -> None:
    r = Reading()
    try:
        stream = [(0x30 | (i % 2) << 1, os.urandom(size)) for i, size in enumerate(sizes)]
        data = b"".join(packet(c, b) for c, b in stream)
        r.theirs.setblocking(False)
        pos, turn = 0, 0
        while pos < len(data):
            try:
                pos += r.theirs.send(data[pos : pos + cuts[turn % len(cuts)]])
            except BlockingIOError:
                pass  # the pair's buffer is full: read first
            turn += 1
            assert r.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(len(sizes) * 50):  # a packet beyond one call's reads needs more calls
            if len(r.got) == len(stream):
                break
            assert r.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert r.got == stream
        assert r.client._rx_start == r.client._rx_end  # nothing left behind
    finally:
        r.close()


def test_a_closed_connection_is_lost(reading: Reading) -> None:
    reading.theirs.sendall(packet(0x40, b"\x00\x07")[:1])
    reading.theirs.close()
    assert reading.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS  # the half header waits
    assert reading.client._packet_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST


def test_what_an_old_connection_left_buffered_is_never_read(reading: Reading) -> None:
    reading.theirs.sendall(b"\x40")  # a PUBACK cut short in its fixed header: buffered
    assert reading.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert reading.got == []
    fresh, other_end = socket.socketpair()
    fresh.setblocking(False)
    try:
        reading.client._sock = fresh
        other_end.sendall(packet(0x40, b"\x00\x09"))
        assert reading.read_all() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert reading.got == [(0x40, b"\x00\x09")]
    finally:
        fresh.close()
        other_end.close()


def test_a_packet_queued_on_the_network_thread_does_not_wake_it(reading: Reading) -> None:
    client = reading.client
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    client._sockpairR, client._sockpairW = wake_r, wake_w
    try:
        client._thread = threading.current_thread()  # as if on_message answered
        client._send_puback(7)
        with pytest.raises(BlockingIOError):
            wake_r.recv(10)
        assert client.want_write()
        client._thread = None
        client._packet_queue(0x40, b"\x40\x02\x00\x08", 8, 0)  # any other thread wakes it
        assert wake_r.recv(10)
    finally:
        client._sockpairR = client._sockpairW = None
        wake_r.close()
        wake_w.close()
