"""Home Assistant MQTT discovery (SPEC 12): configs Home Assistant would accept, on a real Mosquitto."""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
import pytest

from agent.config import DockConfig, parse_config
from agent.ui.ha_discovery import discovery_configs, stale_topics
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import dock_config, running, wait_for
from tests.mqtt_helpers import Recorder

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

# Home Assistant's discovery topic, after the prefix (homeassistant/components/mqtt/discovery.py)
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# Home Assistant renders templates with Jinja2; StrictUndefined makes a missing field an error
JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's value_template gives for `payload` (value and value_json)."""
    return JINJA.from_string(template).render(
        value=payload.decode(), value_json=json.loads(payload)
    )


def two_bays(tmp: Path, broker: Broker | None = None, bays: int = 2) -> DockConfig:
    mqtt = {"host": broker.host, "port": broker.port} if broker else None
    return dock_config(tmp, bays=bays, mqtt=mqtt, delete_from_recorder="never")


def test_every_config_is_a_sensor_topic_home_assistant_matches(tmp_path: Path) -> None:
    configs = discovery_configs(two_bays(tmp_path))
    assert len(configs) == 4 + 2 * 4
    for topic, config in configs.items():
        prefix, _, rest = topic.partition("/")
        match = TOPIC_MATCHER.fullmatch(rest)
        assert prefix == "homeassistant" and match, topic
        assert match["component"] == "sensor" and match["node_id"] == "dock-test"
        assert config["device"]["identifiers"] == ["dock-agent_dock-test"]
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)


def test_the_node_id_is_the_client_id_the_site_acl_grants(tmp_path: Path) -> None:
    """The shipped ACL grants `homeassistant/+/%c/#`: %c is the client id, not the dock id."""
    named = parse_config({"dock": {"id": "d"}, "mqtt": {"client_id": "dock-07"}})
    assert {t.split("/")[2] for t in discovery_configs(named)} == {"dock-07"}
    odd = parse_config({"dock": {"id": "d"}, "mqtt": {"client_id": "site/dock 7"}})
    assert {t.split("/")[2] for t in discovery_configs(odd)} == {"d"}  # not a node_id: the id


def test_no_prefix_no_configs_and_stale_topics(tmp_path: Path) -> None:
    cfg = parse_config({"dock": {"id": "d"}, "mqtt": {"ha_discovery_prefix": ""}})
    assert discovery_configs(cfg) == {}
    assert stale_topics(["a", "b"], {"b": {}}) == ["a"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def retained(broker: Broker, name: str, *filters: str) -> dict[str, bytes]:
    """Every retained message under `filters`, as a new subscriber (Home Assistant) gets them."""
    reader = Recorder(broker, name, *filters)
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + 0.7  # retained messages come at once after the SUBACK
    try:
        while time.monotonic() < deadline:
            try:
                msg = reader.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg.retain:
                got[msg.topic] = msg.payload
        return got
    finally:
        reader.close()


def status_after_offload(broker: Broker) -> bool:
    """R/status counts the offloaded clip (it is refreshed every few seconds)."""
    payload = retained(broker, "poll-status", "dock/dock-test/status").get("dock/dock-test/status")
    status = json.loads(payload) if payload else {}
    return bool(status.get("queue", {}).get("clips") and status["custody_head"]["seq"] > 0)


def test_configs_point_at_topics_and_fields_the_dock_publishes(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = two_bays(tmp_path, broker)
    rec = simkit.SimRecorder(
        battery_pct=95, clips=[simkit.SimClip(datetime.now() - timedelta(hours=1), 1)]
    )
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, _views):
        wait_for(lambda: daemon.bays[1].view.state == "ready", 60, "bay 1 ready")
        wait_for(
            lambda: "ready" in str(retained(broker, "poll", "dock/dock-test/bay/1")), 10, "R/bay/1"
        )
        wait_for(lambda: status_after_offload(broker), 20, "R/status after the offload")
        seen = retained(broker, "home-assistant", "homeassistant/#", "dock/dock-test/#")
    configs = {t: json.loads(p) for t, p in seen.items() if t.startswith("homeassistant/")}
    assert len(configs) == 12, sorted(configs)
    ids = [c["unique_id"] for c in configs.values()]
    assert len(set(ids)) == len(ids) and all(ids)
    values = {}
    for topic, config in configs.items():
        state = config["state_topic"]
        assert state in seen, f"{topic}: state_topic {state} was never published"
        values[config["unique_id"]] = render(config["value_template"], seen[state])
        for avail in config["availability"]:
            assert avail["topic"] == "dock/dock-test/status"
            assert render(avail["value_template"], seen[avail["topic"]]) == "online"
    assert values["dock-agent_dock-test_bay1_state"] == "ready"
    assert values["dock-agent_dock-test_bay1_officer"] == rec.officer_id
    assert float(values["dock-agent_dock-test_bay1_battery"]) >= 95
    assert values["dock-agent_dock-test_bay2_state"] == "empty"
    assert float(values["dock-agent_dock-test_bay1_progress"]) == 100
    assert int(values["dock-agent_dock-test_custody_seq"]) > 0
    assert int(values["dock-agent_dock-test_disk_free"]) > 0
    assert int(values["dock-agent_dock-test_queue_clips"]) == 1  # no receiver: waits for sync
    assert float(values["dock-agent_dock-test_oldest_unsynced_age"]) >= 0
    # the will: the dock gone, every entity unavailable
    offline = retained(broker, "after", "dock/dock-test/status")["dock/dock-test/status"]
    assert render(configs[topic]["availability"][0]["value_template"], offline) == "offline"


def test_a_bay_that_left_the_configuration_is_removed(tmp_path: Path, broker: Broker) -> None:
    with running(two_bays(tmp_path, broker)) as (daemon, _views):
        wait_for(lambda: len(retained(broker, "r1", "homeassistant/#")) == 12, 10, "12 configs")
    with running(two_bays(tmp_path, broker, bays=1)) as (daemon, _views):
        wait_for(lambda: len(retained(broker, "r2", "homeassistant/#")) == 8, 10, "8 configs")
        left = retained(broker, "r3", "homeassistant/#")
    assert not [t for t in left if "/bay2_" in t]
    assert len([t for t in left if "/bay1_" in t]) == 4
