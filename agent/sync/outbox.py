"""A durable outbox: messages kept on disk until the broker acknowledged them (PUBACK)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from agent.durable import make_dirs, write_json
from agent.mqtt.connection import MqttConnection

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0


class Outbox:
    """Daemon plugin: files in `directory`, each published QoS 1 to `topic`, deleted on PUBACK."""

    def __init__(self, directory: Path, conn: MqttConnection, topic: str) -> None:
        self.dir = directory
        make_dirs(self.dir)
        self.conn = conn
        self.topic = topic
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def put(self, key: str, payload: dict[str, Any]) -> None:
        """Keep `payload` durably until it is acknowledged."""
        write_json(self.dir / f"{time.time_ns():020d}-{key}.json", payload)
        self._wake.set()

    def pending(self) -> int:
        """Messages not yet acknowledged."""
        return sum(1 for _ in self.dir.glob("*.json"))

    def start(self) -> None:
        """Start delivering (also what an earlier run left)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering; what is left stays on disk."""
        self._stop.set()
        self._wake.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.conn.connected:
                self._flush()
            self._wake.wait(2.0)
            self._wake.clear()

    def _flush(self) -> None:
        for path in sorted(self.dir.glob("*.json")):
            if self._stop.is_set():
                return
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                logger.warning("outbox: unreadable %s set aside", path.name)
                path.rename(path.with_suffix(".bad"))
                continue
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            if not self.conn.publish_and_wait(self.topic, data, ACK_TIMEOUT_S, qos=1):
                return  # broker gone or refused: keep it, try again later
            path.unlink()
