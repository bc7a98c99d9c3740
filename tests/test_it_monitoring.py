"""IT monitoring end to end: a real Mosquitto, the daemon, retained status, events, commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.evidence.custody import iter_entries
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import config_toml, dock_config, running, settled, wait_for
from tests.mqtt_helpers import Recorder

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def bay_ready(daemon: Any, views: Any) -> bool:
    view = views.latest(1)
    return bool(settled(daemon, views, 1) and view and view.state == "ready")


def messages(rec: Recorder) -> list[tuple[str, dict]]:
    out = []
    while not rec.messages.empty():
        msg = rec.messages.get()
        if msg.payload:
            out.append((msg.topic, json.loads(msg.payload)))
    return out


def test_status_bays_and_events_through_offload_to_ready(tmp_path: Path, broker: Broker) -> None:
    cfg = dock_config(
        tmp_path,
        mqtt={"host": broker.host, "port": broker.port},
        delete_from_recorder="after_local_verify",
    )
    watcher = Recorder(broker, "it-watch", "dock/dock-test/#")
    now = datetime.now()
    rec = simkit.SimRecorder(battery_pct=95, clips=simkit.shift(now - timedelta(hours=30), [2, 2]))
    simkit.build(tmp_path / "bay1", rec, docked=False)
    with running(cfg) as (daemon, views):
        wait_for(lambda: daemon.parts.mqtt.connected, 10, "dock connected")
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: bay_ready(daemon, views), 60, "bay ready")
        got: list[tuple[str, dict]] = []

        def status_with_custody() -> bool:
            got.extend(messages(watcher))
            return any(
                t.endswith("/status") and p.get("custody_head", {}).get("seq", 0) > 0
                for t, p in got
            )

        wait_for(status_with_custody, 15, "R/status with the custody head")

    def offline() -> bool:
        got.extend(messages(watcher))
        return any(t.endswith("/status") and p.get("online") is False for t, p in got)

    wait_for(offline, 10, "the dock's will: its last message")
    bay_states = [p["state"] for t, p in got if t == "dock/dock-test/bay/1"]
    assert "offloading" in bay_states and bay_states[-1] == "ready", bay_states
    last_bay = [p for t, p in got if t == "dock/dock-test/bay/1"][-1]
    assert last_bay["device_id"] == rec.device_id and last_bay["battery_pct"] >= 90
    assert last_bay["progress"]["clips_done"] == 2 and last_bay["storage_free_pct"] == 100.0
    events = [p["type"] for t, p in got if t == "dock/dock-test/events"]
    for expected in ("docked", "clip_offloaded", "offload_complete", "late_offload"):
        assert expected in events, events
    alerts = [p for t, p in got if t == "dock/dock-test/alerts"]
    assert [a["code"] for a in alerts if a["code"] == "late_offload"] == ["late_offload"] * 2
    assert alerts[0]["hours_late"] > 5 and alerts[0]["device_id"] == rec.device_id
    statuses = [p for t, p in got if t == "dock/dock-test/status"]
    online = [s for s in statuses if s.get("online")]
    assert online, statuses
    for key in (
        "version",
        "started_at",
        "ts",
        "clock_synced",
        "clock_sync_source",
        "disk_free_bytes",
        "queue",
        "alerts",
        "custody_head",
    ):
        assert key in online[-1], key
    assert max(s["custody_head"]["seq"] for s in online) > 0
    assert online[-1]["clock_sync_source"] in ("timesyncd", "chrony", "none")
    assert "late_offload" not in online[-1]["alerts"], "a one-off notice is not a lasting alert"
    assert statuses[-1] == {"online": False}, "a clean stop leaves the dock marked offline"
    retained = Recorder(broker, "it-late", "dock/dock-test/bay/1")
    assert retained.next_json("dock/dock-test/bay/1")["state"] == "ready"


def test_will_marks_dock_offline_after_kill9(tmp_path: Path, broker: Broker) -> None:
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    path = tmp_path / "dock.toml"
    path.write_text(config_toml(cfg))
    watcher = Recorder(broker, "it-will", "dock/dock-test/status")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = watcher.next_json("dock/dock-test/status", timeout=20)
        assert first["online"] is True
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 90  # the will fires after 1.5 x keepalive at most
        while time.monotonic() < deadline:
            payload = watcher.next_json("dock/dock-test/status", timeout=90)
            if payload == {"online": False}:
                break
        else:
            pytest.fail("no will after kill -9")
    finally:
        proc.kill()


def command(client: Recorder, topic: str, payload: bytes) -> str:
    props = Properties(PacketTypes.PUBLISH)
    corr = uuid.uuid4().hex
    props.CorrelationData = corr.encode()
    client.client.publish(topic, payload, qos=1, properties=props)
    return corr


def answered(it: Recorder, timeout: float = 10.0) -> None:
    """Ping until a ping is answered: the dock's command subscription is live (SUBACK came).

    Commands are answered in order, so once the last ping's reply came no other reply follows.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        corr = command(it, "dock/dock-test/cmd/ping", b"{}").encode()
        try:
            while it.next(timeout=1.0).properties.CorrelationData != corr:
                pass
            return
        except AssertionError:
            continue  # sent before the subscription: dropped
    raise AssertionError("no ping answered")


def test_ping_and_error_replies_with_correlation_data(tmp_path: Path, broker: Broker) -> None:
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    it = Recorder(broker, "it-cmd", "dock/dock-test/cmd/+/reply")
    with running(cfg) as (daemon, _views):
        wait_for(lambda: daemon.parts.mqtt.connected, 10, "dock connected")
        answered(it)
        cases = [
            ("ping", b"{}", True),
            ("ping", b"not json", False),
            ("frobnicate", b"{}", False),
            ("note", b'{"note_id": 5}', False),
            ("note", b"x" * 70000, False),
            ("note", b'{"note_id": "n-404", "author": "it", "text": "why"}', False),
            ("hold", b'{"clip_id": "%s", "reason": "r", "release": true}' % (b"a" * 64), False),
            ("hold", b'{"clip_id": "%s", "reason": "r"}' % (b"a" * 64), False),
        ]
        for name, payload, ok in cases:
            corr = command(it, f"dock/dock-test/cmd/{name}", payload)
            msg = it.next(timeout=10)
            assert msg.properties.CorrelationData == corr.encode()
            reply = json.loads(msg.payload)
            assert reply["ok"] is ok, (name, reply)
            if not ok:
                assert reply["error"], reply
        assert daemon.healthy()
    # refused commands are not evidence: none reached the custody log
    assert "command" not in [e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")]
