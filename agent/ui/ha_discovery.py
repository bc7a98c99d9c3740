"""Home Assistant MQTT discovery (SPEC 12): retained configs for the dock and its bays.

Topics are `{prefix}/{component}/{client id}/{object_id}/config`: the node_id is the dock's MQTT
client id, so a dock writes only under `{prefix}/+/{client id}/#` (the site ACL, SPEC 11). One
device per dock and one per bay (`via_device` the dock). Every template reads R/status or
R/bay/{n} guarded (`is defined`), so the will's `{"online": false}` or an empty retained payload
renders an empty state (Home Assistant keeps the last one) instead of a template error.

The topics published are remembered in {data_dir}/state/ha_discovery.json with the bays they
were for; at the next connection the configs of bays that left the configuration (or of an old
prefix or node) are removed with an empty retained payload, and so is each removed bay's
retained R/bay/{n}.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent import __version__
from agent.config import ID_RE, DockConfig
from agent.durable import write_json
from agent.events import BAY_STATES
from agent.ui.i18n import TEXT, text
from agent.ui.settings import split_listen

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes], bool]
Entity = tuple[str, str, dict[str, Any]]  # component, object_id, config fields
DIAGNOSTIC = {"entity_category": "diagnostic"}
ALERT_CODES = (
    "clock_unsynced", "deletes_held", "disk_full", "disk_low", "late_offload",
    "mqtt_auth_failed", "receipt_invalid", "recorder_fault", "sync_backlog", "sync_failed",
    "verify_failed",
)  # fmt: skip

# Templates. `value_json` is undefined for a payload that is not JSON (an empty retained one).
STATUS_OK = "value_json is defined and value_json.online is defined and value_json.online"
BAY_OK = "value_json is defined and value_json.state is defined"
_BAY_TOPIC = re.compile(r"/bay(\d+)_state/config$")
ONLINE = "{{ 'online' if " + STATUS_OK + " else 'offline' }}"


def _status_value(expr: str) -> str:
    """A dock sensor's template: `expr` while online, empty (keep the last state) otherwise."""
    return "{{ (" + expr + ") if " + STATUS_OK + " else '' }}"


def _bay_value(expr: str) -> str:
    """A bay sensor's template: `expr` for a bay payload, empty (keep the last state) otherwise."""
    return "{{ (" + expr + ") if " + BAY_OK + " else '' }}"


BATTERY = _bay_value(
    "value_json.battery_pct | round(0) | int if value_json.battery_pct is number else 'None'"
)
# An empty bay (or one still identifying) has no progress: unknown, not 0 %. A recorder with
# nothing to offload is done: 100 %.
PROGRESS = _bay_value(
    "(100 * value_json.progress.bytes_done / value_json.progress.bytes_total) | round(0) | int "
    "if value_json.progress.bytes_total "
    "else (100 if value_json.state in ['charging', 'ready'] else 'None')"
)
BAY_ATTRIBUTES = (
    "{{ ({'device_id': value_json.device_id, 'officer_id': value_json.officer_id, "
    "'clock_offset_s': value_json.clock_offset_s, "
    "'storage_free_pct': value_json.storage_free_pct, 'findings': value_json.findings, "
    "'clips_done': value_json.progress.clips_done, "
    "'clips_total': value_json.progress.clips_total} if " + BAY_OK + " else {}) | tojson }}"
)


def _alert_attributes(language: str) -> str:
    """The problem sensor's attributes: the active alert codes and what they mean."""
    words = {c: text(f"code.{c}", language) for c in ALERT_CODES if f"code.{c}" in TEXT}
    return (
        "{% set ns = namespace(m=[]) %}{% if " + STATUS_OK + " %}"
        "{% for c in value_json.alerts | default([]) %}"
        "{% set ns.m = ns.m + [" + json.dumps(words, ensure_ascii=False) + ".get(c, c)] %}"
        "{% endfor %}{{ {'alerts': value_json.alerts | default([]), 'messages': ns.m} | tojson }}"
        "{% else %}{}{% endif %}"
    )


def _dock_entities(cfg: DockConfig) -> list[Entity]:
    """The dock's own entities, all from R/status."""
    name = _namer(cfg.ui.language)
    alerts = "value_json.alerts | default([])"
    return [
        ("sensor", "queue_clips", {"name": name("queue_clips"), "unit_of_measurement": "clips",
         "state_class": "measurement", "icon": "mdi:upload-multiple",
         "value_template": _status_value("value_json.queue.clips")}),
        ("sensor", "oldest_unsynced_age", {
            "name": name("oldest_unsynced_age"), "device_class": "duration",
            "unit_of_measurement": "s", "state_class": "measurement",
            "suggested_display_precision": 0,
            "value_template": _status_value(
                "(value_json.queue.oldest_unsynced_age_s or 0) | round(0) | int")}),
        ("sensor", "disk_free", {"name": name("disk_free"), "device_class": "data_size",
         "unit_of_measurement": "GB", "state_class": "measurement",
         "suggested_display_precision": 1,
         "value_template": _status_value("(value_json.disk_free_bytes / 1e9) | round(2)")}),
        ("sensor", "custody_seq", {"name": name("custody_seq"), **DIAGNOSTIC,
         "state_class": "total_increasing", "icon": "mdi:link-lock",
         "value_template": _status_value("value_json.custody_head.seq")}),
        ("binary_sensor", "problem", {"name": name("problem"), "device_class": "problem",
         "value_template": _status_value(f"'ON' if {alerts} else 'OFF'"),
         "json_attributes_template": _alert_attributes(cfg.ui.language)}),
        ("binary_sensor", "clock_synced", {"name": name("clock_synced"), **DIAGNOSTIC,
         "icon": "mdi:clock-check-outline",
         "value_template": _status_value("'ON' if value_json.clock_synced else 'OFF'")}),
    ]  # fmt: skip


def _connectivity(cfg: DockConfig) -> Entity:
    """Online/offline from R/status itself: it has no availability, the will turns it off."""
    return ("binary_sensor", "connectivity", {
        "name": _namer(cfg.ui.language)("connectivity"), "device_class": "connectivity",
        "value_template": "{{ 'ON' if " + STATUS_OK + " else 'OFF' }}"})  # fmt: skip


def _bay_entities(cfg: DockConfig, n: int) -> list[Entity]:
    """Bay `n`'s entities, all from R/bay/{n}."""
    name = _namer(cfg.ui.language)
    return [
        ("sensor", f"bay{n}_state", {"name": name("state"), "device_class": "enum",
         "options": list(BAY_STATES), "icon": "mdi:cellphone-link",
         "value_template": _bay_value("value_json.state"),
         "json_attributes_template": BAY_ATTRIBUTES}),
        ("sensor", f"bay{n}_officer", {"name": name("officer"), "icon": "mdi:account-badge",
         "value_template": _bay_value("value_json.officer_id or ''")}),
        ("sensor", f"bay{n}_battery", {"name": name("battery"), "device_class": "battery",
         "unit_of_measurement": "%", "state_class": "measurement", "value_template": BATTERY}),
        ("sensor", f"bay{n}_progress", {"name": name("progress"), "unit_of_measurement": "%",
         "icon": "mdi:progress-upload", "value_template": PROGRESS}),
    ]  # fmt: skip


def _namer(language: str) -> Callable[[str], str]:
    return lambda key: text(f"ha.{key}", language)


def configuration_url(listen: str) -> str | None:
    """The status page's address for Home Assistant, when it listens beyond loopback."""
    address = split_listen(listen) if listen else None
    if address is None:
        return None
    host, port = address
    if host in ("localhost", "::1") or host.startswith("127."):
        return None
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def _devices(cfg: DockConfig) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The dock's device and each bay's (linked to the dock by via_device)."""
    dock_ident = f"dock-agent_{cfg.dock.id}"
    url = configuration_url(cfg.ui.listen)
    common: dict[str, Any] = {"manufacturer": "dock-agent", "sw_version": __version__}
    if url:
        common["configuration_url"] = url
    dock = {
        **common,
        "identifiers": [dock_ident],
        "name": text("ha.dock_device", cfg.ui.language).format(dock=cfg.dock.id),
        "model": text("ha.dock_model", cfg.ui.language),
    }
    bays = {
        b.number: {
            **common,
            "identifiers": [f"{dock_ident}_bay{b.number}"],
            "name": text("ha.bay_device", cfg.ui.language).format(dock=cfg.dock.id, n=b.number),
            "model": text("ha.bay_model", cfg.ui.language),
            "via_device": dock_ident,
        }
        for b in cfg.bay
    }
    return dock, bays


def node_id(cfg: DockConfig) -> str:
    """The node_id of the dock's discovery topics: its client id (the ACL's %c), else its id.

    [mqtt] client_id is refused unless it matches ID_RE; the dock id stands in for a client id
    that an older configuration check let through.
    """
    return cfg.client_id if re.fullmatch(ID_RE, cfg.client_id) else cfg.dock.id


def discovery_configs(cfg: DockConfig) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload for the dock and every configured bay (pure)."""
    prefix = cfg.mqtt.ha_discovery_prefix
    if not prefix:
        return {}
    dock_device, bay_devices = _devices(cfg)
    status = f"{cfg.topic}/status"
    available = {"availability": [{"topic": status, "value_template": ONLINE}]}
    entities = [(e, status, dock_device, available) for e in _dock_entities(cfg)]
    entities.append((_connectivity(cfg), status, dock_device, {}))
    for bay in cfg.bay:
        topic = f"{cfg.topic}/bay/{bay.number}"
        device = bay_devices[bay.number]
        entities += [(e, topic, device, available) for e in _bay_entities(cfg, bay.number)]
    configs: dict[str, dict[str, Any]] = {}
    for (component, object_id, fields), topic, device, extra in entities:
        config = {
            **fields,
            "unique_id": f"dock-agent_{cfg.dock.id}_{object_id}",
            "object_id": f"{cfg.dock.id}_{object_id}",
            "state_topic": topic,
            **extra,
            "device": device,
        }
        if "json_attributes_template" in fields:
            config["json_attributes_topic"] = topic
        configs[f"{prefix}/{component}/{node_id(cfg)}/{object_id}/config"] = config
    return configs


def stale_topics(published_before: list[str], current: dict[str, Any]) -> list[str]:
    """Topics published last time that the configuration no longer has (to empty)."""
    return sorted(set(published_before) - set(current))


class HaDiscovery:
    """Publishes the discovery configs retained at every (re)connect, and removes stale ones."""

    def __init__(self, cfg: DockConfig, publish: Publish) -> None:
        self._configs = discovery_configs(cfg)
        self._bays = sorted(b.number for b in cfg.bay)
        self._root = cfg.topic
        self._publish = publish
        self._memory = cfg.data_dir / "state" / "ha_discovery.json"

    def on_connect(self) -> None:
        """Connection hook: publish everything (Home Assistant may have lost its state too)."""
        topics, bays = self._remembered()
        ok = True
        for topic in stale_topics(topics, self._configs):
            ok = self._publish(topic, b"") and ok
        for n in sorted(set(bays) - set(self._bays)):  # after its configs: no entity reads it
            ok = self._publish(f"{self._root}/bay/{n}", b"") and ok
        for topic, config in self._configs.items():
            ok = self._publish(topic, json.dumps(config, ensure_ascii=False).encode()) and ok
        if ok:
            write_json(self._memory, {"topics": sorted(self._configs), "bays": self._bays})
        else:
            logger.warning("Home Assistant discovery: not every config could be queued")

    def _remembered(self) -> tuple[list[str], list[int]]:
        try:
            data = json.loads(Path(self._memory).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return [], []
        if not isinstance(data, dict):
            return [], []
        topics, bays = data.get("topics"), data.get("bays")
        topics = [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []
        numbers = {n for n in bays if isinstance(n, int)} if isinstance(bays, list) else set()
        numbers |= {int(m[1]) for t in topics if (m := _BAY_TOPIC.search(t))}  # older memories
        return topics, sorted(numbers)


def retained_publisher(conn: Any) -> Publish:
    """A Publish for an MqttConnection: QoS 1, retained; False when paho refused to queue it."""

    def publish(topic: str, payload: bytes) -> bool:
        info = conn.publish(topic, payload, qos=1, retain=True)
        return bool(info.rc == mqtt.MQTT_ERR_SUCCESS)

    return publish
