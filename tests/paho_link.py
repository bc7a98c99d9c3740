"""A Transport over a plain paho client the test connects (test-only: the dock sends through
agent.mqtt.connection.MqttConnection)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from agent.transfer.link import Handler, PubackListener

logger = logging.getLogger(__name__)


class PahoLink:
    """A Transport over a paho v5 client the caller connects; re-subscribes on every connect."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self._subs: list[tuple[str, int]] = []
        self._connected = threading.Event()
        if client.is_connected():
            self._connected.set()
        self._subacks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._chain_connect = client.on_connect
        self._chain_disconnect = client.on_disconnect
        self._chain_subscribe = client.on_subscribe
        self._chain_publish = client.on_publish
        self._pubacks: list[PubackListener] = []
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Properties | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Publish through the paho client."""
        return self.client.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        """Route `topic_filter` to `handler` and keep it subscribed across reconnects."""
        self.client.message_callback_add(topic_filter, lambda _c, _u, msg: handler(msg))
        self._subs.append((topic_filter, qos))
        if self.client.is_connected():
            done = threading.Event()
            with self._lock:
                _rc, mid = self.client.subscribe(topic_filter, qos)
                if mid is not None:
                    self._subacks[mid] = done
            if not done.wait(5.0):
                logger.warning(
                    "no SUBACK for %s yet; answers may be missed until it comes", topic_filter
                )

    def on_puback(self, listener: PubackListener) -> None:
        """Call `listener(mid, reason_code)` on every PUBACK (network thread, paho's lock held)."""
        self._pubacks.append(listener)

    def wait_connected(self, timeout: float) -> bool:
        """True once the client is connected."""
        return self._connected.wait(timeout) if timeout > 0 else self._connected.is_set()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        reason = args[2] if len(args) > 2 else None
        if reason is not None and getattr(reason, "is_failure", False):
            logger.warning("connection refused: %s", reason)
        else:
            for topic_filter, qos in self._subs:
                client.subscribe(topic_filter, qos)
            self._connected.set()
        if self._chain_connect:
            self._chain_connect(client, *args)

    def _on_subscribe(self, client: mqtt.Client, *args: Any) -> None:
        with self._lock:
            done = self._subacks.pop(args[1], None) if len(args) > 1 else None
        if done is not None:
            done.set()
        if self._chain_subscribe:
            self._chain_subscribe(client, *args)

    def _on_publish(self, client: mqtt.Client, *args: Any) -> None:
        for listener in self._pubacks:
            listener(args[1], args[2] if len(args) > 2 else 0)
        if self._chain_publish:
            self._chain_publish(client, *args)

    def _on_disconnect(self, client: mqtt.Client, *args: Any) -> None:
        self._connected.clear()
        if self._chain_disconnect:
            self._chain_disconnect(client, *args)
