"""Telling people what happens: MQTT status/events/alerts/commands and systemd state."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent import __version__
from agent.daemon import sdnotify
from agent.daemon.alerts import evaluate, transitions
from agent.daemon.runtime import Daemon
from agent.mqtt.command_policy import Known
from agent.mqtt.commands import CommandServer
from agent.mqtt.connection import MqttConnection
from agent.mqtt.status import StatusPublisher
from agent.trust.dock import deletes_held_reason, dock_fingerprint
from agent.ui.ha_discovery import HaDiscovery, retained_publisher

logger = logging.getLogger(__name__)

ALERT_EVERY_S = 10.0
STATUS_EVERY_S = 5.0
STALL_S = 300.0


class Reporting:
    """Daemon plugin: R/status, R/bay/n, R/events, R/alerts, R/cmd/*, and sd_notify."""

    def __init__(
        self,
        daemon: Daemon,
        conn: MqttConnection,
        handlers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]],
        known: Known,
    ) -> None:
        self.daemon = daemon
        s = daemon.services
        self.publisher = StatusPublisher(
            conn, s.cfg.topic, provider=self.status_payload, alerts=daemon.alerts
        )
        self.discovery = HaDiscovery(s.cfg, retained_publisher(conn))
        self._conn = conn
        s.bus.subscribe(self.publisher)
        self.commands = CommandServer(
            conn,
            s.cfg.topic,
            handlers,
            s.custody,
            known,
            rate_per_min=s.cfg.mqtt.command_rate_per_min,
        )
        self.watchdog = sdnotify.Watchdog()
        self.stall_s = STALL_S  # a worker busy without progress this long is hung
        self.watchdog.add_check("bay workers", lambda: daemon.healthy(self.stall_s))
        self.watchdog.add_check("plugins", self._plugins_healthy)
        self._next_alerts = 0.0
        self._next_status = 0.0
        self._last_status = ""

    def start(self) -> None:
        """Start publishing and serving commands; tell systemd we are ready."""
        self._conn.add_on_connect(self.discovery.on_connect)
        self.publisher.start()
        self.commands.start()
        self.watchdog.start()
        sdnotify.ready(self.summary())

    def stop(self) -> None:
        """Stop serving; the MQTT will marks the dock offline when the connection ends."""
        sdnotify.stopping("stopping")
        self.watchdog.stop()
        self.commands.stop()
        self.publisher.stop()

    def tick(self) -> None:
        """Periodic: alert conditions, systemd STATUS line."""
        now = time.monotonic()
        if now >= self._next_alerts:
            self._next_alerts = now + ALERT_EVERY_S
            self._evaluate_alerts()
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            line = self.summary()
            if line != self._last_status:
                self._last_status = line
                sdnotify.status(line)
                self.publisher.refresh()

    def _plugins_healthy(self) -> bool:
        checks = [getattr(p, "healthy", None) for p in self.daemon.plugins]
        return all(check(self.stall_s) for check in checks if check is not None)

    def _evaluate_alerts(self) -> None:
        s = self.daemon.services
        usage = shutil.disk_usage(s.store.root)
        age = self._oldest_unsynced_age()
        held = deletes_held_reason(s.cfg)
        now = evaluate(usage.free, usage.total, age, s.clock(), s.cfg.policy, held)
        for code, severity, message in transitions(self.daemon.alerts.codes(), now):
            s.bus.alert(code, severity, message)

    def _oldest_unsynced_age(self) -> float | None:
        oldest = self.daemon.services.index.stats().get("oldest_unsynced_offloaded_at")
        if not oldest:
            return None
        return (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()

    def status_payload(self) -> dict[str, Any]:
        """The dock's R/status fields (the publisher adds online, ts and alerts)."""
        s = self.daemon.services
        stats = s.index.stats()
        age = self._oldest_unsynced_age()
        seq, head = s.custody.head()
        clock = s.clock()
        return {
            "version": __version__,
            "dock_id": s.cfg.dock.id,
            "started_at": self.daemon.started_at.isoformat(timespec="seconds"),
            "clock_synced": clock.synced,
            "clock_sync_source": clock.source,
            "disk_free_bytes": s.store.free_bytes(),
            "queue": {
                "clips": stats["unsynced_clips"],
                "bytes": stats["unsynced_bytes"],
                "oldest_unsynced_age_s": round(age, 1) if age is not None else None,
            },
            "custody_head": {"seq": seq, "hash": head},
            "key_fingerprint": dock_fingerprint(s.cfg),
        }

    def summary(self) -> str:
        """One line for systemd STATUS: bay states and the sync queue."""
        bays = " ".join(f"{n}:{w.view.state}" for n, w in sorted(self.daemon.bays.items()))
        stats = self.daemon.services.index.stats()
        return f"bays {bays or '-'}; queue {stats['unsynced_clips']} clips"
