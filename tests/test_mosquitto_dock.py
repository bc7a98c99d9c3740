"""What a dock publishes besides its state, on the shipped site broker (config/mosquitto/,
SPEC 6, 11, 12), through the production connection.

Home Assistant discovery: the dock's own configs, as agent/ui/ha_discovery.py lays them out,
pass the ACL and the same configs in another dock's name are refused; IT (and Home Assistant
logged in as it) reads them. Command replies: on R/cmd/{name}/reply, which the ACL lets the
dock write and IT read, whatever Response Topic the command named.
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from pathlib import Path

from agent.config import DockConfig, parse_config
from agent.demo.site import Site
from agent.mqtt.commands import CommandServer
from agent.mqtt.connection import MqttConnection
from agent.ui.ha_discovery import HaDiscovery, discovery_configs, retained_publisher
from tests.fakes import MemoryCustody
from tests.mqtt_helpers import FAST_BACKOFF, wait_for
from tests.test_mosquitto_site import QUIET_S, Client, clients, pytestmark, site, wait_topic
from tests.test_mqtt_commands import Known

__all__ = ["pytestmark", "site"]  # the shipped broker (test_mosquitto_site's fixture), its skip


def site_dock(site: Site, tmp: Path, dock: str) -> DockConfig:
    """A dock of two bays logged in to the site as `dock` (client id = user name = dock id)."""
    return parse_config(
        {
            "dock": {"id": dock, "data_dir": str(tmp / "data")},
            "bay": [{"number": n, "sim_dir": str(tmp / f"bay{n}")} for n in (1, 2)],
            "mqtt": {
                "host": "127.0.0.1",
                "port": site.port,
                "username": dock,
                "password_file": str(site.password_files[dock]),
                "tls_ca": str(site.ca),
            },
            "ui": {"listen": ""},
        }
    )


def arrived(client: Client, want: set[str], timeout: float = 10.0) -> set[str]:
    """Topics that reach `client` until all of `want` did (or `timeout` passed)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.add(client.got.get(timeout=0.1).topic)
    return seen


def test_a_dock_publishes_its_own_discovery_configs_and_no_other_docks(
    site: Site, tmp_path: Path
) -> None:
    cfg = site_dock(site, tmp_path, "dock-01")
    own = set(discovery_configs(cfg))
    assert own and all(t.split("/")[2] == "dock-01" for t in own)
    assert {t.split("/")[1] for t in own} == {"sensor", "binary_sensor"}
    with clients(site, "it") as (it,):
        assert not any(code.is_failure for code in it.subscribe("homeassistant/#"))
        conn = MqttConnection(cfg.mqtt, cfg.client_id, backoff=FAST_BACKOFF)
        conn.add_on_connect(HaDiscovery(cfg, retained_publisher(conn)).on_connect)
        conn.start()
        try:
            assert conn.wait_connected(10)
            assert arrived(it, own) == own
            assert conn.publish_failures == 0, "the ACL refused one of the dock's own configs"
            others = sorted(t.replace("/dock-01/", "/dock-02/") for t in own)
            mids = [conn.publish(t, b'{"name": "forged"}', qos=1, retain=True).mid for t in others]
            wait_for(lambda: conn.publish_failures == len(others), 10, "the refusals")
            assert {str(conn.ack_failure(mid)) for mid in mids} == {"Not authorized"}
            barrier = sorted(own)[0]  # sent after the forged ones: it arrives, they did not
            conn.publish(barrier, json.dumps(discovery_configs(cfg)[barrier]), qos=1, retain=True)
            wait_topic(it, barrier)
            time.sleep(QUIET_S)
            assert not [t for t in it.topics() if "/dock-02/" in t]
        finally:
            conn.stop()
    with clients(site, "it") as (late,):  # nothing forged was retained either
        late.subscribe("homeassistant/#")
        time.sleep(QUIET_S)
        retained = late.topics()
    assert set(retained) == own, "the dock's configs stay retained, and nothing in dock-02's name"


def test_command_replies_reach_it_whatever_response_topic_was_named(
    site: Site, tmp_path: Path
) -> None:
    cfg = site_dock(site, tmp_path, "dock-01")
    conn = MqttConnection(cfg.mqtt, cfg.client_id, backoff=FAST_BACKOFF)
    server = CommandServer(conn, cfg.topic, {}, MemoryCustody(), Known())
    server.start()
    conn.start()
    try:
        assert conn.wait_connected(10)
        with clients(site, "it") as (it,):
            it.subscribe("#")  # IT reads what the ACL lets it: dock/# and discovery
            for named in ("it/inbox", "dock-02/inbox", None):
                corr = it.publish("dock/dock-01/cmd/ping", b"{}", reply_to=named)
                reply = wait_topic(it, "dock/dock-01/cmd/ping/reply")
                assert json.loads(reply.payload)["ok"] is True
                if named:
                    assert reply.properties.CorrelationData == corr
            time.sleep(QUIET_S)
            assert not [t for t in it.topics() if "inbox" in t]
        assert conn.publish_failures == 0, "the ACL refused a reply"
    finally:
        server.stop()
        conn.stop()
