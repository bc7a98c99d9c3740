"""Home Assistant MQTT discovery (SPEC 12): retained sensor configs for the dock and its bays.

Topics are `{prefix}/sensor/{node_id}/{object_id}/config` (Home Assistant's discovery topic),
the node_id being the dock's MQTT client id: the site broker's ACL lets a dock write
`{prefix}/+/%c/#` (config/mosquitto/acl, SPEC 11), its own discovery topics and no other
dock's. A client id Home Assistant would not take as a node_id ([a-zA-Z0-9_-]+) gives way to
the dock id (such a site's ACL must grant that topic itself). The topics published are remembered in
{data_dir}/state/ha_discovery.json, so that at the next connection the configs of bays that
left the configuration (or of an old prefix) are removed with an empty retained payload.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent import __version__
from agent.config import ID_RE, DockConfig
from agent.daemon.events import BAY_STATES
from agent.durable import write_json

logger = logging.getLogger(__name__)

ONLINE = "{{ 'online' if value_json.online else 'offline' }}"
PROGRESS = (
    "{{ (100 * value_json.progress.bytes_done / value_json.progress.bytes_total) | round(0) "
    "if value_json.progress.bytes_total else 0 }}"
)
Publish = Callable[[str, bytes], bool]


def _dock_sensors(root: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(object_id, state topic, fields) of the dock's own sensors, all from R/status."""
    status = f"{root}/status"
    return [
        ("queue_clips", status, {"name": "Sync queue", "unit_of_measurement": "clips",
         "state_class": "measurement", "value_template": "{{ value_json.queue.clips }}"}),
        ("oldest_unsynced_age", status, {
            "name": "Oldest unsynced clip", "device_class": "duration",
            "unit_of_measurement": "s", "state_class": "measurement",
            "value_template": "{{ value_json.queue.oldest_unsynced_age_s or 0 }}"}),
        ("disk_free", status, {"name": "Disk free", "device_class": "data_size",
         "unit_of_measurement": "B", "state_class": "measurement",
         "value_template": "{{ value_json.disk_free_bytes }}"}),
        ("custody_seq", status, {"name": "Custody log entries", "state_class": "total_increasing",
         "value_template": "{{ value_json.custody_head.seq }}"}),
    ]  # fmt: skip


def _bay_sensors(root: str, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(object_id, state topic, fields) of bay `n`'s sensors, all from R/bay/{n}."""
    bay = f"{root}/bay/{n}"
    return [
        (f"bay{n}_state", bay, {"name": f"Bay {n} state", "device_class": "enum",
         "options": list(BAY_STATES), "value_template": "{{ value_json.state }}"}),
        (f"bay{n}_officer", bay, {"name": f"Bay {n} officer",
         "value_template": "{{ value_json.officer_id or '' }}"}),
        (f"bay{n}_battery", bay, {"name": f"Bay {n} battery", "device_class": "battery",
         "unit_of_measurement": "%", "state_class": "measurement",
         "value_template": "{{ value_json.battery_pct }}"}),
        (f"bay{n}_progress", bay, {"name": f"Bay {n} progress", "unit_of_measurement": "%",
         "value_template": PROGRESS}),
    ]  # fmt: skip


def node_id(cfg: DockConfig) -> str:
    """The node_id of the dock's discovery topics: its client id (the ACL's %c), else its id."""
    return cfg.client_id if re.fullmatch(ID_RE, cfg.client_id) else cfg.dock.id


def discovery_configs(cfg: DockConfig, version: str = __version__) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload for the dock and every configured bay (pure)."""
    prefix = cfg.mqtt.ha_discovery_prefix
    if not prefix:
        return {}
    dock = cfg.dock.id
    node = node_id(cfg)
    device = {
        "identifiers": [f"dock-agent_{dock}"],
        "name": f"Dock {dock}",
        "manufacturer": "dock-agent",
        "model": "body-worn recorder dock",
        "sw_version": version,
    }
    availability = [{"topic": f"{cfg.topic}/status", "value_template": ONLINE}]
    sensors = _dock_sensors(cfg.topic)
    for bay in cfg.bay:
        sensors += _bay_sensors(cfg.topic, bay.number)
    return {
        f"{prefix}/sensor/{node}/{object_id}/config": {
            **fields,
            "unique_id": f"dock-agent_{dock}_{object_id}",
            "state_topic": topic,
            "availability": availability,
            "device": device,
        }
        for object_id, topic, fields in sensors
    }


def stale_topics(published_before: list[str], current: dict[str, Any]) -> list[str]:
    """Topics published last time that the configuration no longer has (to empty)."""
    return sorted(set(published_before) - set(current))


class HaDiscovery:
    """Publishes the discovery configs retained at every (re)connect, and removes stale ones."""

    def __init__(self, cfg: DockConfig, publish: Publish) -> None:
        self._configs = discovery_configs(cfg)
        self._publish = publish
        self._memory = cfg.data_dir / "state" / "ha_discovery.json"

    def on_connect(self) -> None:
        """Connection hook: publish everything (Home Assistant may have lost its state too)."""
        ok = True
        for topic in stale_topics(self._remembered(), self._configs):
            ok = self._publish(topic, b"") and ok
        for topic, config in self._configs.items():
            ok = self._publish(topic, json.dumps(config, ensure_ascii=False).encode()) and ok
        if ok:
            write_json(self._memory, {"topics": sorted(self._configs)})
        else:
            logger.warning("Home Assistant discovery: not every config could be queued")

    def _remembered(self) -> list[str]:
        try:
            data = json.loads(Path(self._memory).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        topics = data.get("topics") if isinstance(data, dict) else None
        return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []


def retained_publisher(conn: Any) -> Publish:
    """A Publish for an MqttConnection: QoS 1, retained; False when paho refused to queue it."""

    def publish(topic: str, payload: bytes) -> bool:
        info = conn.publish(topic, payload, qos=1, retain=True)
        return bool(info.rc == mqtt.MQTT_ERR_SUCCESS)

    return publish
