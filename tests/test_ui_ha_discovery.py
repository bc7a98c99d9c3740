"""Home Assistant MQTT discovery (SPEC 12): configs Home Assistant would accept, on a real Mosquitto."""

from __future__ import annotations

import json
import queue
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest

from agent.config import ConfigError, DockConfig, parse_config
from agent.events import BAY_STATES, BayView, Progress
from agent.ui.ha_discovery import configuration_url, discovery_configs, node_id, stale_topics
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
    """What Home Assistant's templates give for `payload` (value, and value_json when JSON)."""
    variables: dict[str, Any] = {"value": payload.decode()}
    try:
        variables["value_json"] = json.loads(payload)
    except ValueError:
        pass  # Home Assistant leaves value_json undefined too
    return JINJA.from_string(template).render(**variables)


def two_bays(tmp: Path, broker: Broker | None = None, bays: int = 2) -> DockConfig:
    mqtt = {"host": broker.host, "port": broker.port} if broker else None
    return dock_config(tmp, bays=bays, mqtt=mqtt, delete_from_recorder="never")


def test_every_config_is_a_topic_home_assistant_matches_under_the_dock_client_id(
    tmp_path: Path,
) -> None:
    configs = discovery_configs(two_bays(tmp_path))
    assert len(configs) == 7 + 2 * 4
    for topic, config in configs.items():
        prefix, _, rest = topic.partition("/")
        match = TOPIC_MATCHER.fullmatch(rest)
        assert prefix == "homeassistant" and match, topic
        assert match["component"] in ("sensor", "binary_sensor")
        assert match["node_id"] == "dock-test"  # the client id: the ACL's {prefix}/+/{client id}/#
        device = config["device"]
        if "/bay" in topic:
            n = match["object_id"][3]
            assert device["identifiers"] == [f"dock-agent_dock-test_bay{n}"]
            assert device["via_device"] == "dock-agent_dock-test"
            assert device["name"] == f"dock-test 仓位 {n}"
        else:
            assert device["identifiers"] == ["dock-agent_dock-test"]
            assert device["name"] == "采集站 dock-test"
        assert "configuration_url" not in device  # the page listens on loopback only
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    assert len({c["object_id"] for c in configs.values()}) == len(configs)


def test_node_id_names_and_configuration_url_follow_the_configuration(tmp_path: Path) -> None:
    cfg = parse_config({
        "dock": {"id": "dock-07", "data_dir": str(tmp_path)},
        "bay": [{"number": 3, "sim_dir": str(tmp_path / "b")}],
        "mqtt": {"client_id": "site-dock-07", "ha_discovery_prefix": "ha"},
        "ui": {"language": "en", "listen": "192.0.2.7:8080"},
    })  # fmt: skip
    configs = discovery_configs(cfg)
    assert all(t.startswith("ha/") and t.split("/")[2] == "site-dock-07" for t in configs)
    state = configs["ha/sensor/site-dock-07/bay3_state/config"]
    assert state["name"] == "State" and state["device"]["name"] == "dock-07 bay 3"
    assert state["device"]["configuration_url"] == "http://192.0.2.7:8080/"
    assert state["options"] == list(BAY_STATES) and state["device_class"] == "enum"
    assert state["json_attributes_topic"] == "dock/dock-07/bay/3"
    assert configuration_url("[::1]:8080") is None and configuration_url("") is None
    assert configuration_url("0.0.0.0:80") == f"http://{socket.gethostname()}:80/"
    diagnostic = {t.split("/")[3] for t, c in configs.items() if c.get("entity_category")}
    assert diagnostic == {"custody_seq", "clock_synced"}


WILL = b'{"online":false}'


def test_no_template_fails_on_the_will_or_an_empty_payload(tmp_path: Path) -> None:
    """Home Assistant renders every message of a state topic; StrictUndefined fails as it would."""
    for config in discovery_configs(two_bays(tmp_path)).values():
        for payload in (WILL, b""):
            for key in ("value_template", "json_attributes_template"):
                if key not in config:
                    continue
                out = render(config[key], payload)
                if key == "json_attributes_template":
                    assert json.loads(out) == {}, (config["unique_id"], payload)
                elif config["unique_id"].endswith("_connectivity"):
                    assert out == "OFF"
                else:
                    assert out == "", (config["unique_id"], payload, out)  # HA keeps its state
            for avail in config.get("availability", []):
                assert render(avail["value_template"], payload) == "offline"


def test_battery_is_a_whole_percent_and_an_empty_bay_has_no_progress(tmp_path: Path) -> None:
    configs = discovery_configs(two_bays(tmp_path))
    battery = configs["homeassistant/sensor/dock-test/bay1_battery/config"]["value_template"]
    progress = configs["homeassistant/sensor/dock-test/bay1_progress/config"]["value_template"]
    empty = json.dumps(BayView(1).to_json()).encode()
    charging = BayView(1, "charging", "ZFY1", "012345", 97.42, 1.5)
    charging.progress = Progress(2, 2, 500, 1000)
    payload = json.dumps(charging.to_json()).encode()
    assert (render(battery, empty), render(progress, empty)) == ("None", "None")  # unknown
    assert (render(battery, payload), render(progress, payload)) == ("97", "50")
    done = BayView(1, "ready", "ZFY1", "012345", 100, 0)  # a recorder with nothing to offload
    assert render(progress, json.dumps(done.to_json()).encode()) == "100"


def test_the_node_id_is_the_client_id_the_site_acl_grants(tmp_path: Path) -> None:
    """The shipped ACL grants `homeassistant/+/%c/#`: %c is the client id, not the dock id."""
    named = parse_config({"dock": {"id": "d"}, "mqtt": {"client_id": "dock-07"}})
    assert {t.split("/")[2] for t in discovery_configs(named)} == {"dock-07"}
    with pytest.raises(ConfigError):  # no node_id, and / would widen the ACL's pattern
        parse_config({"dock": {"id": "d"}, "mqtt": {"client_id": "site/dock 7"}})
    assert node_id(replace(named, mqtt=replace(named.mqtt, client_id="site/dock 7"))) == "d"


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
    assert len(configs) == 15, sorted(configs)
    ids = [c["unique_id"] for c in configs.values()]
    assert len(set(ids)) == len(ids) and all(ids)
    values, attributes = {}, {}
    for topic, config in configs.items():
        state = config["state_topic"]
        assert state in seen, f"{topic}: state_topic {state} was never published"
        values[config["unique_id"]] = render(config["value_template"], seen[state])
        if "json_attributes_template" in config:
            attrs = render(
                config["json_attributes_template"], seen[config["json_attributes_topic"]]
            )
            attributes[config["unique_id"]] = json.loads(attrs)
        for avail in config.get("availability", []):
            assert avail["topic"] == "dock/dock-test/status"
            assert render(avail["value_template"], seen[avail["topic"]]) == "online"
    assert values["dock-agent_dock-test_bay1_state"] == "ready"
    assert values["dock-agent_dock-test_bay1_officer"] == rec.officer_id
    assert int(values["dock-agent_dock-test_bay1_battery"]) >= 95
    assert values["dock-agent_dock-test_bay2_state"] == "empty"
    assert values["dock-agent_dock-test_bay1_progress"] == "100"
    assert values["dock-agent_dock-test_bay2_progress"] == "None"  # an empty bay: unknown
    assert int(values["dock-agent_dock-test_custody_seq"]) > 0
    assert float(values["dock-agent_dock-test_disk_free"]) > 0  # GB
    assert values["dock-agent_dock-test_connectivity"] == "ON"
    assert values["dock-agent_dock-test_clock_synced"] in ("ON", "OFF")
    assert values["dock-agent_dock-test_problem"] == ("ON" if attributes[
        "dock-agent_dock-test_problem"]["alerts"] else "OFF")  # fmt: skip
    bay1 = attributes["dock-agent_dock-test_bay1_state"]
    assert bay1["device_id"] == rec.device_id and isinstance(bay1["findings"], list)
    assert "clock_offset_s" in bay1 and "storage_free_pct" in bay1
    assert int(values["dock-agent_dock-test_queue_clips"]) == 1  # no receiver: waits for sync
    assert float(values["dock-agent_dock-test_oldest_unsynced_age"]) >= 0
    # the will: the dock gone, every entity unavailable
    offline = retained(broker, "after", "dock/dock-test/status")["dock/dock-test/status"]
    state_config = configs["homeassistant/sensor/dock-test/bay1_state/config"]
    assert render(state_config["availability"][0]["value_template"], offline) == "offline"
    connectivity = next(c for c in configs.values() if c["unique_id"].endswith("connectivity"))
    assert render(connectivity["value_template"], offline) == "OFF"


def test_a_bay_that_left_the_configuration_is_removed(tmp_path: Path, broker: Broker) -> None:
    with running(two_bays(tmp_path, broker)) as (daemon, _views):
        wait_for(lambda: len(retained(broker, "r1", "homeassistant/#")) == 15, 10, "15 configs")
        wait_for(
            lambda: "dock/dock-test/bay/2" in retained(broker, "b", "dock/+/bay/+"), 10, "bay 2"
        )
    with running(two_bays(tmp_path, broker, bays=1)) as (daemon, _views):
        wait_for(lambda: len(retained(broker, "r2", "homeassistant/#")) == 11, 10, "11 configs")
        left = retained(broker, "r3", "homeassistant/#", "dock/#")
    assert not [t for t in left if "/bay2_" in t or t.endswith("/bay/2")], sorted(left)
    assert len([t for t in left if "/bay1_" in t]) == 4 and "dock/dock-test/bay/1" in left


def test_a_client_id_home_assistant_or_the_acl_could_not_take_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"dock": {"id": "d"}, "mqtt": {"client_id": "dock.01/a"}})
    assert err.value.problems == [
        "mqtt.client_id = 'dock.01/a': expected [A-Za-z0-9_-]{1,64}, or empty for the dock id"
    ]
