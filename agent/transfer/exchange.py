"""Commands out, answers back: correlation data routed to waiters, from responses or PUBACKs."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transfer import protocol as p
from agent.transfer.link import Transport

logger = logging.getLogger(__name__)

Answer = tuple[bytes, p.Response]
ACK_MODES = ("response", "puback")
_EARLY_ACK_KEPT_S = 30.0  # a PUBACK may beat the bookkeeping of its own publish


class Exchange:
    """Publishes file-transfer commands and routes each answer to the queue waiting for it.

    `ack_mode = "response"`: answers are messages on `$file-response/{client_id}` (SPEC 7).
    `ack_mode = "puback"`: answers are the PUBACK reason codes (EMQX before 5.3.2 only; on
    Mosquitto a PUBACK means only that the broker took the message).
    """

    def __init__(self, transport: Transport, client_id: str, ack_mode: str = "response") -> None:
        if ack_mode not in ACK_MODES:
            raise ValueError(f"ack_mode {ack_mode!r}: expected one of {', '.join(ACK_MODES)}")
        self.transport = transport
        self.ack_mode = ack_mode
        self.reply_topic = p.response_topic(client_id)
        self._waiters: dict[bytes, queue.Queue[Answer]] = {}
        self._by_mid: dict[int, tuple[bytes, str]] = {}
        self._early: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()
        if ack_mode == "puback":
            on_puback = getattr(transport, "on_puback", None)
            if on_puback is None:
                raise ValueError("ack_mode 'puback': this connection does not report PUBACKs")
            on_puback(self._on_puback)
        transport.subscribe(self.reply_topic, 1, self._on_response)

    def publish(
        self,
        answers: queue.Queue[Answer],
        topic: str,
        payload: bytes,
        user_property: tuple[str, str] | None = None,
    ) -> bytes:
        """Publish one command; its answer goes to `answers`. Returns its correlation data."""
        corr = uuid.uuid4().bytes
        with self._lock:
            self._waiters[corr] = answers
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        if user_property is not None:
            props.UserProperty = [user_property]
        try:
            info = self.transport.publish(topic, payload, qos=1, properties=props)
        except Exception as exc:  # silence is then handled by the answer timeout
            logger.warning("publish to %s failed: %s", topic, exc)
            return corr
        if self.ack_mode == "puback":
            self._track(getattr(info, "mid", None), corr, topic)
        return corr

    def forget(self, corr: bytes) -> None:
        """Stop routing answers for `corr`."""
        with self._lock:
            self._waiters.pop(corr, None)

    def _track(self, mid: int | None, corr: bytes, topic: str) -> None:
        if mid is None:
            return
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None or time.monotonic() - early[0] > _EARLY_ACK_KEPT_S:
                self._by_mid[mid] = (corr, topic)
                return
        self._deliver(corr, _puback_response(topic, mid, early[1]))

    def _on_puback(self, mid: int, reason: Any) -> None:
        """A PUBACK (network thread, under paho's lock: only bookkeeping here)."""
        code = int(getattr(reason, "value", reason or 0))
        with self._lock:
            tracked = self._by_mid.pop(mid, None)
            if tracked is None:
                now = time.monotonic()
                self._early = {
                    m: e for m, e in self._early.items() if now - e[0] <= _EARLY_ACK_KEPT_S
                }
                self._early[mid] = (now, code)
                return
        self._deliver(tracked[0], _puback_response(tracked[1], mid, code))

    def _deliver(self, corr: bytes, resp: p.Response) -> None:
        with self._lock:
            target = self._waiters.get(corr)
        if target is not None:
            target.put((corr, resp))

    def _on_response(self, msg: mqtt.MQTTMessage) -> None:
        """Route one response message to the send waiting for it (network thread)."""
        if self.ack_mode == "puback":
            return
        corr = getattr(getattr(msg, "properties", None), "CorrelationData", None)
        if not isinstance(corr, bytes):
            return
        try:
            resp = p.parse_response(bytes(msg.payload))
        except p.ProtocolError as exc:
            logger.warning("unreadable file-transfer response: %s", exc.description)
            return
        self._deliver(corr, resp)


def poll(answers: queue.Queue[Answer]) -> Answer | None:
    """The next answer waiting in `answers`, or None at once."""
    try:
        return answers.get_nowait()
    except queue.Empty:
        return None


def _puback_response(topic: str, mid: int, code: int) -> p.Response:
    """A PUBACK as an answer; MQTT 5 codes below 0x80 are success (e.g. 0x10 no subscribers)."""
    return p.Response(
        topic=topic,
        packet_id=mid,
        reason_code=p.SUCCESS if code < 0x80 else code,
        reason_description=f"PUBACK 0x{code:02x}",
    )
