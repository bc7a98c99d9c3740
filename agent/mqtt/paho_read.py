"""paho's reading of packets: one `recv` for many small packets, and ACKs without delay.

paho reads a packet's command byte, then each byte of its length, then its body, each with a
`recv` of its own: three to five system calls for a 4-byte PUBACK, each one letting go of the
GIL and taking it back. A file transfer's sender gets a PUBACK and an answer per segment, its
receiver the headers of each segment and a PUBACK per answer.

Here a socket read lands in one buffer (`RX_BYTES`), and packets are taken from it: the small
ones whole, a large one's first part copied into its own buffer, its rest read into that buffer
directly. `loop_read` takes every whole packet that is buffered before it returns (select
cannot see them), beyond paho's own count if need be, so nothing buffered waits for more bytes
to come. The state of a packet in progress is paho's own `_in_packet`.

After each such read the socket is put back in quick-ACK mode (Linux): Mosquitto (Nagle on, as
by default) holds a small packet (an answer, a PUBACK) while an earlier one is unacknowledged,
and Linux delays the ACK of a connection that also sends, up to 40 ms: a sender's answers came
in bursts 40 to 90 ms apart, its window full meanwhile.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import LogLevel, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

RX_BYTES = 64 << 10
# A packet up to this size is read into one buffer allocated when its length is known; a larger
# one (a broker would have to allow it) grows as its bytes arrive, as paho does, so that a
# length alone never makes the client allocate it.
_PREALLOCATED_MAX = 16 << 20
_MAX_READS = 100  # reads of one packet per call, as paho: a huge packet must not stall the loop
_MALFORMED = -1  # a remaining length of more than four bytes
_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


def fixed_header(buffer: bytearray, start: int, end: int) -> tuple[int, int, int] | None:
    """(command, remaining length, header bytes) of the packet at `buffer[start:end]`, None
    while it is cut short; remaining length `_MALFORMED` when it runs past four bytes."""
    if end - start < 2:
        return None
    length, mult = 0, 1
    for pos in range(start + 1, min(end, start + 5)):
        digit = buffer[pos]
        length += (digit & 0x7F) * mult
        mult *= 128
        if not digit & 0x80:
            return buffer[start], length, pos + 1 - start
    return (buffer[start], _MALFORMED, 0) if end - start >= 5 else None


class BufferedReads(mqtt.Client):
    """paho's Client reading through one buffer when `_fast` (else paho's reads throughout)."""

    _fast: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = bytearray(RX_BYTES)
        self._rx_start = self._rx_end = 0
        self._rx_sock: Any = None  # the socket the buffered bytes came from
        self._quickack = bool(_TCP_QUICKACK)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if not self._fast or self._transport == "websockets":
            return super().loop_read(max_packets)
        budget = max(len(self._out_messages) + len(self._in_messages), 1)
        while budget > 0 or self._buffered_whole():
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            budget -= 1
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_read(self) -> MQTTErrorCode:
        if not self._fast or self._transport == "websockets":
            return super()._packet_read()
        if self._rx_sock is not self._sock:  # a new connection: nothing of the old one is read
            self._rx_sock, self._rx_start, self._rx_end = self._sock, 0, 0
        if self._in_packet["command"] == 0:
            rc = self._begin_packet()
            if rc is not None:
                return rc
        rc = self._read_body()
        if rc is not None:
            return rc
        self._in_packet["pos"] = 0
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(LogLevel.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {  # paho's state of a packet not begun
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc

    def _buffered_whole(self) -> bool:
        """Whether a whole packet (or a malformed header) waits in the buffer."""
        if self._in_packet["command"] != 0 or self._rx_sock is not self._sock:
            return False
        found = fixed_header(self._rx, self._rx_start, self._rx_end)
        if found is None:
            return False
        _, length, used = found
        return length == _MALFORMED or self._rx_end - self._rx_start >= used + length

    def _begin_packet(self) -> MQTTErrorCode | None:
        """Take a packet's fixed header and what is buffered of its body (None: begun)."""
        found = fixed_header(self._rx, self._rx_start, self._rx_end)
        if found is None:
            rc = self._fill()
            if rc is not None:
                return rc
            found = fixed_header(self._rx, self._rx_start, self._rx_end)
            if found is None:
                return MQTTErrorCode.MQTT_ERR_AGAIN
        command, length, used = found
        if length == _MALFORMED:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        start = self._rx_start + used
        have = min(self._rx_end - start, length)
        if have == length or length > _PREALLOCATED_MAX:
            body = self._rx[start : start + have]  # a copy: the buffer is read into again
        else:
            body = bytearray(length)
            body[:have] = memoryview(self._rx)[start : start + have]
        packet = self._in_packet
        packet["command"] = command
        packet["remaining_count"] = list(self._rx[self._rx_start + 1 : start])
        packet["have_remaining"] = 1
        packet["remaining_length"] = length
        packet["packet"] = body
        packet["to_process"] = length - have
        self._rx_start = start + have
        return None

    def _fill(self) -> MQTTErrorCode | None:
        """Read what the socket has into the buffer, after the (few) bytes still in it."""
        rest = self._rx_end - self._rx_start
        if rest:
            self._rx[:rest] = self._rx[self._rx_start : self._rx_end]
        self._rx_start, self._rx_end = 0, rest
        with memoryview(self._rx) as view:
            got = self._recv_into(view[rest:])
        if isinstance(got, MQTTErrorCode):
            return got
        self._rx_end += got
        self._mark_received()
        if self._quickack:
            self._ack_quickly()
        return None

    def _ack_quickly(self) -> None:
        """Quick-ACK mode again (Linux leaves it on its own), for the small packets to come."""
        sock = self._sock
        try:
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:  # not TCP: never asked again of this client
            self._quickack = False

    def _read_body(self) -> MQTTErrorCode | None:
        """Read the rest of the packet into its buffer (None: it is complete)."""
        packet = self._in_packet
        buffer = packet["packet"]
        for _ in range(_MAX_READS):
            if packet["to_process"] <= 0:
                return None
            got = self._read_more(buffer, packet["remaining_length"], packet["to_process"])
            if isinstance(got, MQTTErrorCode):
                return got
            packet["to_process"] -= got
            self._mark_received()
        return None if packet["to_process"] <= 0 else MQTTErrorCode.MQTT_ERR_AGAIN

    def _read_more(self, buffer: bytearray, length: int, missing: int) -> int | MQTTErrorCode:
        """Read some of the `missing` bytes of a `length`-byte packet into `buffer`: how many."""
        if len(buffer) == length:  # preallocated: filled in place
            with memoryview(buffer) as view:
                return self._recv_into(view[length - missing :])
        got = self._recv_some(missing)
        if isinstance(got, MQTTErrorCode):
            return got
        buffer += got
        return len(got)

    def _recv_some(self, size: int) -> bytes | MQTTErrorCode:
        """Up to `size` bytes, or what paho's read loop answers when there are none."""
        try:
            data = self._sock_recv(size)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError included, as paho's read of the command
            self._easy_log(LogLevel.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return data if data else MQTTErrorCode.MQTT_ERR_CONN_LOST

    def _recv_into(self, view: memoryview) -> int | MQTTErrorCode:
        """`_recv_some` into `view`: how many bytes came."""
        sock = self._sock
        if not isinstance(sock, socket.socket):
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        try:
            count = sock.recv_into(view)
        except (BlockingIOError, ssl.SSLWantReadError):
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except ssl.SSLWantWriteError:
            self._call_socket_register_write()
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(LogLevel.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return count if count else MQTTErrorCode.MQTT_ERR_CONN_LOST

    def _mark_received(self) -> None:
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
