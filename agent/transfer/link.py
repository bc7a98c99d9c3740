"""What the sender needs from an MQTT connection (the dock's MqttConnection is one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

Handler = Callable[[mqtt.MQTTMessage], None]


class Transport(Protocol):
    """The slice of an MQTT v5 connection that file transfer uses."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Properties | None = None
    ) -> Any:
        """Queue one message; delivery is judged by the file-transfer response, not here."""

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> Any:
        """Subscribe now and again after every reconnect, calling `handler` per message."""

    def wait_connected(self, timeout: float) -> bool:
        """True once connected (waits up to `timeout` seconds)."""


PubackListener = Callable[[int, Any], None]
