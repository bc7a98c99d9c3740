"""Dock status, bay views, events and alerts on MQTT (SPEC 6): R/status, R/bay/{n}, R/events, R/alerts.

`StatusPublisher` is an EventBus listener (`bus.subscribe(publisher)`).

- R/status (retained, QoS 1): `{"online": true, **provider(), "ts", "alerts"}`; the provider
  callable supplies version, started_at, clock_synced, clock_sync_source (who answered:
  timesyncd, chrony or none), disk_free_bytes, queue and custody_head.
  Published on every (re)connect, every `interval_s`, and when it changes (checked every
  `poll_s`, and at once when the set of active alerts changes).
- R/bay/{n} (retained, QoS 1): BayView.to_json(). A change of `state` goes out at once; other
  updates (progress) at most once per `bay_min_interval_s` per bay, always the latest view.
- R/events and R/alerts (QoS 1, not retained): every DockEvent / Alert, in order. While the
  connection is down they wait in a bounded in-memory queue (oldest dropped, counted) and
  are flushed after the reconnect; paho itself resends what was in flight.

Active alerts (the `alerts` list of R/status) are read from an `ActiveAlerts` (agent.events):
the daemon's own, or, when none is given, one the publisher keeps from the alerts it is handed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from agent.events import ActiveAlerts, Alert, BayView, DockEvent, now_iso
from agent.mqtt.connection import MqttConnection

logger = logging.getLogger(__name__)

StatusProvider = Callable[[], dict[str, Any]]
OFFLINE = {"online": False}


def status_will(root: str) -> tuple[str, bytes]:
    """The MQTT will of a dock with topic root `root` (= {topic_root}/{dock.id})."""
    return f"{root}/status", _dumps(OFFLINE)


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class _BaySlot:
    latest: dict[str, Any]
    state: str
    dirty: bool = True
    sent_state: str | None = None
    sent_at: float = float("-inf")


class StatusPublisher:
    """Publishes the dock's state for IT: retained status and bays, events and alerts."""

    def __init__(
        self,
        conn: MqttConnection,
        root: str,
        provider: StatusProvider,
        *,
        interval_s: float = 30.0,
        poll_s: float = 5.0,
        bay_min_interval_s: float = 0.25,
        queue_limit: int = 10000,
        alerts: ActiveAlerts | None = None,
    ) -> None:
        """`alerts`: the active set kept by whoever subscribed it to the bus before this."""
        self._conn = conn
        self._root = root
        self._provider = provider
        self._interval_s = interval_s
        self._poll_s = poll_s
        self._bay_interval = bay_min_interval_s
        self._cond = threading.Condition()
        self._bays: dict[int, _BaySlot] = {}
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queue_limit = queue_limit
        self._own_alerts = alerts is None
        self._alerts = ActiveAlerts() if alerts is None else alerts
        self._sent_alerts: list[str] = []
        self._status_due = True
        self._last_status: dict[str, Any] = {}
        self._last_status_at = float("-inf")
        self._last_provided: dict[str, Any] = {}
        self._last_check_at = float("-inf")
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped = 0

    @property
    def active_alerts(self) -> list[str]:
        """The codes of the alerts active now, sorted."""
        return self._alerts.codes()

    def start(self) -> None:
        """Hook into the connection's (re)connects and start the publishing thread."""
        self._conn.add_on_connect(self._on_connect)
        self._thread = threading.Thread(target=self._run, name="mqtt-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the publishing thread (the connection's will/stop marks the dock offline)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(5)

    def refresh(self) -> None:
        """Publish R/status soon (the provider's values changed)."""
        with self._cond:
            self._status_due = True
            self._cond.notify_all()

    def __call__(self, item: BayView | DockEvent | Alert) -> None:
        """EventBus listener: route a bay view, event or alert."""
        if isinstance(item, BayView):
            self._bay(item)
        elif isinstance(item, DockEvent):
            self._enqueue(f"{self._root}/events", item.to_json())
        elif isinstance(item, Alert):
            self._alert(item)

    def _alert(self, alert: Alert) -> None:
        if self._own_alerts:
            self._alerts.on_item(alert)
        with self._cond:
            if self._alerts.codes() != self._sent_alerts:
                self._status_due = True
                self._cond.notify_all()
        self._enqueue(f"{self._root}/alerts", alert.to_json())

    def _enqueue(self, topic: str, payload: dict[str, Any]) -> None:
        data = _dumps(payload)
        with self._cond:
            if self._conn.connected and not self._queue and self._send(topic, data):
                return
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()
                self.dropped += 1
                logger.warning("offline queue full: dropped the oldest message (%s)", self.dropped)
            self._queue.append((topic, data))
            self._cond.notify_all()

    def _send(self, topic: str, data: bytes, retain: bool = False) -> bool:
        info = self._conn.publish(topic, data, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning("could not queue %s for MQTT: %s", topic, mqtt.error_string(info.rc))
            return False
        return True

    def _bay(self, view: BayView) -> None:
        payload = view.to_json()
        with self._cond:
            slot = self._bays.setdefault(view.number, _BaySlot(payload, view.state))
            slot.latest, slot.state, slot.dirty = payload, view.state, True
            if self._bay_due(slot, time.monotonic()) and self._conn.connected:
                self._send_bay(view.number, slot)
            else:
                self._cond.notify_all()

    def _bay_due(self, slot: _BaySlot, now: float) -> bool:
        changed = slot.state != slot.sent_state
        return slot.dirty and (changed or now - slot.sent_at >= self._bay_interval)

    def _send_bay(self, number: int, slot: _BaySlot) -> None:
        if self._send(f"{self._root}/bay/{number}", _dumps(slot.latest), retain=True):
            slot.dirty = False
            slot.sent_state = slot.state
            slot.sent_at = time.monotonic()

    def _on_connect(self) -> None:
        with self._cond:
            self._status_due = True
            for slot in self._bays.values():
                slot.dirty, slot.sent_at = True, float("-inf")
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(self._next_wait())
                if self._stopping:
                    return
                if not self._conn.connected:
                    continue
                self._flush_queue()
                self._flush_bays()
            self._maybe_publish_status()

    def _next_wait(self) -> float:
        now = time.monotonic()
        waits = [self._poll_s]
        for slot in self._bays.values():
            if slot.dirty:
                waits.append(slot.sent_at + self._bay_interval - now)
        if self._status_due or (self._queue and self._conn.connected):
            waits.append(0.05)
        return max(0.01, min(waits))

    def _flush_queue(self) -> None:
        while self._queue and self._conn.connected:
            topic, data = self._queue[0]
            if not self._send(topic, data):
                return
            self._queue.popleft()

    def _flush_bays(self) -> None:
        now = time.monotonic()
        for number, slot in self._bays.items():
            if self._bay_due(slot, now):
                self._send_bay(number, slot)

    def _maybe_publish_status(self) -> None:
        now = time.monotonic()
        if not self._status_due and now - self._last_check_at < self._poll_s:
            return  # the provider may be costly: ask it at most every poll_s unless due
        self._last_check_at = now
        payload = self._status_payload()
        with self._cond:
            same = {**payload, "ts": None} == {**self._last_status, "ts": None}
            stale = time.monotonic() - self._last_status_at >= self._interval_s
            if not (self._status_due or stale or not same) or not self._conn.connected:
                return
            if self._send(f"{self._root}/status", _dumps(payload), retain=True):
                self._status_due = False
                self._last_status = payload
                self._sent_alerts = payload["alerts"]
                self._last_status_at = time.monotonic()

    def _status_payload(self) -> dict[str, Any]:
        try:
            self._last_provided = dict(self._provider())
        except Exception:
            logger.exception("status provider failed; publishing its last values")
        return {
            "online": True,
            **self._last_provided,
            "ts": now_iso(),
            "alerts": self.active_alerts,
        }
