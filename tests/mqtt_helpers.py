"""Test helpers for MQTT: a recording subscriber and a dock MqttSection pointed at a test broker."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from tests.broker import Broker

FAST_BACKOFF = (0.1, 0.5)


def section(broker: Broker, **kw: Any) -> MqttSection:
    """The [mqtt] section of a dock talking to `broker`."""
    return MqttSection(host=broker.host, port=broker.port, **kw)


class Recorder:
    """A plain paho v5 client that records what arrives on its subscriptions."""

    def __init__(self, broker: Broker, client_id: str, *filters: str, persistent: bool = False):
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self._filters = filters
        self._pending: set[int] = set()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.subscribed = False
        self.client.loop_start()
        wait_for(lambda: self.subscribed, 5, "recorder subscribed")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # Subscribed means SUBACKed: a broker stopped before it processed SUBSCRIBE would
        # otherwise persist a session without the subscription, and tests would race it.
        for f in self._filters:
            _rc, mid = client.subscribe(f, 1)
            self._pending.add(mid)
        if not self._filters:
            self.subscribed = True

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _rcs: Any, _p: Any) -> None:
        self._pending.discard(mid)
        if not self._pending:
            self.subscribed = True

    def next(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        """The next message, or AssertionError after `timeout`."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def next_json(self, topic: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The JSON payload of the next message (on `topic`, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if topic is None or msg.topic == topic:
                return dict(json.loads(msg.payload))

    def drain(self, settle: float = 0.3) -> list[mqtt.MQTTMessage]:
        """Everything that arrives until nothing has for `settle` seconds."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=settle))
            except queue.Empty:
                return out

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond: Any, timeout: float, what: str) -> None:
    """Poll `cond()` until true, else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def delivered(send: Callable[[], object], got: queue.Queue[bytes], timeout: float) -> bytes:
    """Send until a message arrives: a subscription is live only once its SUBACK came, which
    a client learns without telling; `send` must return truthy (e.g. publish_and_wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert send(), "the publish was not acknowledged"
        try:
            return got.get(timeout=0.2)
        except queue.Empty:
            continue
    raise AssertionError(f"nothing delivered within {timeout}s")
