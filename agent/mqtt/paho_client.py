"""paho's MQTT v5 client, moving large messages without copying them a dozen times.

A 256 KiB file-transfer segment is the common message of both the dock and the receiver, and
paho 2.x copies it over and over on the one thread that reads and writes the socket:

- reading, each `recv` allocates a buffer as large as what is still missing, which is then
  appended to the packet; decoding then slices the rest of the packet at every field and at
  every byte of every property (`struct.unpack("!H{n}s")`, `buffer = buffer[1:]`): about
  fifteen copies of a segment with its three properties (response topic, correlation data,
  `dock_sig`), 0.5 ms a segment;
- writing, each `send` is given a copy of what is left of the packet.

Here a packet is read into one buffer of its size, its fields are read through a memoryview,
and its payload is that buffer itself, its header trimmed off (a bytearray); what is written is
a view of the packet. Only a packet this decoder reads exactly as paho would is decoded here:
anything else (QoS 2, MQTT 3.x, a packet this code finds malformed) goes to paho's own
`_handle_publish`, which decodes it, refuses it or answers it as it always has.

Packets are read through one buffer (agent/mqtt/paho_read). The socket has TCP_NODELAY: an
answer or a PUBACK is a small write that Nagle would hold while an earlier one is unacknowledged.
A packet queued on the network thread itself (a PUBACK, an answer sent from on_message) is not
announced through paho's socket pair: that thread's loop writes it next anyway.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.mqtt.paho_read import BufferedReads

# What the overrides rely on inside paho (`_paho_fits`).
_PAHO_PARTS = (
    "_in_packet",
    "_handle_on_message",
    "_send_puback",
    "_manual_ack",
    "_protocol",
    "_packet_handle",
    "_msgtime_mutex",
    "_easy_log",
    "_call_socket_register_write",
    "_transport",
    "_thread",
    "_out_packet",
    "_out_messages",
    "_in_messages",
    "_loop_rc_handle",
    "_sock_recv",
)


def decode_publish(command: int, packet: bytearray) -> mqtt.MQTTMessage | None:
    """An MQTT v5 PUBLISH of QoS 0 or 1 (`packet`: all after the fixed header), or None.

    None when the packet is not one of those or is malformed: paho decodes it then. The
    message's payload is `packet` itself, its header deleted (no copy); nothing else may hold
    or export `packet`.
    """
    qos = (command & 0x06) >> 1
    if qos > 1:
        return None
    with memoryview(packet) as view:
        found = _fields(view, qos)
        if found is None:
            return None
        topic, mid, pos, end = found
        properties = _properties(bytes(view[pos:end]))
        if properties is None:
            return None
    del packet[:end]  # a bytearray drops its head in place
    message = mqtt.MQTTMessage(mid=mid, topic=topic)
    message.payload = packet
    message.dup = bool(command & 0x08)
    message.qos = qos
    message.retain = bool(command & 0x01)
    message.properties = properties
    return message


def _fields(view: memoryview, qos: int) -> tuple[bytes, int, int, int] | None:
    """(topic, packet id, where the properties start, where they end), None when cut short."""
    size = len(view)
    if size < 2:
        return None
    pos = 2 + int.from_bytes(view[0:2], "big")
    if pos > size:
        return None
    topic = bytes(view[2:pos])
    mid = 0
    if qos:
        if pos + 2 > size:
            return None
        mid, pos = int.from_bytes(view[pos : pos + 2], "big"), pos + 2
    found = _varint(view, pos)
    if found is None:
        return None
    length, width = found
    end = pos + width + length
    return None if end > size else (topic, mid, pos, end)


def _properties(region: bytes) -> Properties | None:
    """A PUBLISH's properties (`region`: their length and themselves), as paho reads them.

    The response topic, correlation data and user properties of a file-transfer command are
    read here (paho's `Properties` takes ~40 µs for them: a list of its 27 names rebuilt per
    attribute); any other property, or anything paho would refuse, goes to paho's `unpack`.
    """
    found = _varint(memoryview(region), 0)
    if found is None:
        return None
    fields = _common_fields(region, found[1], found[1] + found[0])
    if fields is None:
        return _paho_properties(region)
    properties = object.__new__(Properties)
    properties.__dict__.update(_TEMPLATE.__dict__)  # its tables, shared: paho only reads them
    for name, value in fields.items():
        object.__setattr__(properties, name, value)
    return properties


def _common_fields(region: bytes, pos: int, end: int) -> dict[str, Any] | None:
    """{attribute: value} when `region[pos:end]` holds only ids 8, 9 and 38, well formed."""
    fields: dict[str, Any] = {}
    if end != len(region):
        return None
    while pos < end:
        ident = region[pos]
        pos += 1
        if ident == 38:
            key, pos = _utf8(region, pos, end)
            value, pos = _utf8(region, pos, end)
            if key is None or value is None:
                return None
            fields.setdefault("UserProperty", []).append((key, value))
            continue
        if ident not in _SINGLE or _SINGLE[ident] in fields:
            return None
        item, pos = _utf8(region, pos, end) if ident == 8 else _binary(region, pos, end)
        if item is None:
            return None
        fields[_SINGLE[ident]] = item
    return fields


def _binary(region: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    if pos + 2 > end:
        return None, pos
    stop = pos + 2 + int.from_bytes(region[pos : pos + 2], "big")
    return (region[pos + 2 : stop], stop) if stop <= end else (None, pos)


def _utf8(region: bytes, pos: int, end: int) -> tuple[str | None, int]:
    """A UTF-8 string as paho's `readUTF` accepts it (no NUL, no U+FEFF), or None."""
    raw, stop = _binary(region, pos, end)
    if raw is None:
        return None, pos
    try:
        text = raw.decode("utf-8")  # strict: refuses encoded surrogates (D800-DFFF) too
    except UnicodeDecodeError:
        return None, pos
    return (None, pos) if "\x00" in text or "\ufeff" in text else (text, stop)


def _paho_properties(region: bytes) -> Properties | None:
    properties = Properties(PacketTypes.PUBLISH)
    try:
        _, used = properties.unpack(region)
    except Exception:  # malformed: paho's own decoder says how (MalformedPacket)
        return None
    return properties if used == len(region) else None


_SINGLE = {8: "ResponseTopic", 9: "CorrelationData"}
_TEMPLATE = Properties(PacketTypes.PUBLISH)


def _varint(view: memoryview, pos: int) -> tuple[int, int] | None:
    """A Variable Byte Integer at `pos`: (value, bytes used), None when malformed or cut short."""
    value = 0
    for width in range(4):
        if pos + width >= len(view):
            return None
        digit = view[pos + width]
        value += (digit & 0x7F) << (7 * width)
        if not digit & 0x80:
            return value, width + 1
    return None


class Client(BufferedReads):
    """paho's Client, reading packets through one buffer and decoding PUBLISH without copies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast = _paho_fits(self)

    def _create_socket_connection(self) -> socket.socket:
        sock = super()._create_socket_connection()
        with contextlib.suppress(OSError):  # not TCP (a proxy's socket may be anything)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        # paho sends `packet[pos:]`: of a memoryview, that is not a copy.
        data: Any = memoryview(packet) if self._fast else packet
        if not self._fast or threading.current_thread() is not self._thread:
            return super()._packet_queue(command, data, mid, qos, info)
        # On the network thread: its loop writes it next (want_write); paho would also send a
        # byte through its socket pair, to wake a loop that is not asleep.
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(data),
                "packet": data,
                "info": info,
            }
        )
        self._call_socket_register_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        if not self._fast or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        message = None
        if isinstance(packet, bytearray):
            message = decode_publish(self._in_packet["command"], packet)
        if message is None:
            return super()._handle_publish()
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if message.qos == 0 or self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)


def _paho_fits(client: mqtt.Client) -> bool:
    """Whether this paho has what the overrides rely on (else paho's own code runs throughout).

    From 2.2 on, paho bounds every property value by the properties' length, so that reading
    them from that region alone (as `decode_publish` does) gives what paho reads; a value that
    would run past it raises in both, and paho then refuses the packet as it always has.
    """
    version = tuple(int(x) for x in re.findall(r"\d+", paho.mqtt.__version__)[:2])
    return (
        version >= (2, 2)
        and all(hasattr(client, name) for name in _PAHO_PARTS)
        and hasattr(mqtt, "time_func")
        and isinstance(getattr(client, "_in_packet", None), dict)
    )
