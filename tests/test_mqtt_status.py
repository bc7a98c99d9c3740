"""StatusPublisher against a real Mosquitto: retained status and bays, rate limiting, outages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.events import BayView, EventBus, Progress
from agent.mqtt.connection import MqttConnection
from agent.mqtt.status import StatusPublisher, status_will
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.mqtt_helpers import FAST_BACKOFF, Recorder, section, wait_for

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
ROOT = "dock/dock-s"
PROVIDED = {
    "version": "0.1.0",
    "started_at": "2026-01-01T00:00:00+00:00",
    "clock_synced": True,
    "disk_free_bytes": 123456,
    "queue": {"clips": 2, "bytes": 2048, "oldest_unsynced_age_s": 12.5},
    "custody_head": {"seq": 7, "hash": "ab" * 32},
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def dock(broker: Broker) -> Iterator[tuple[EventBus, StatusPublisher, MqttConnection]]:
    conn = MqttConnection(section(broker), "dock-s", will=status_will(ROOT), backoff=FAST_BACKOFF)
    provided: dict[str, Any] = dict(PROVIDED)
    pub = StatusPublisher(conn, ROOT, lambda: provided, poll_s=0.2, bay_min_interval_s=0.25)
    bus = EventBus()
    bus.subscribe(pub)
    pub.start()
    conn.start()
    assert conn.wait_connected(5)
    yield bus, pub, conn
    pub.stop()
    conn.stop()


def test_status_is_retained_with_spec_fields(broker: Broker, dock: Any) -> None:
    bus, pub, _conn = dock
    bus.alert("disk_low", "warning", "3% free")
    late = Recorder(broker, "it-1", f"{ROOT}/status")
    wait_for(lambda: pub.active_alerts == ["disk_low"], 5, "alert active")
    deadline = time.monotonic() + 5
    status = late.next_json()
    while status.get("alerts") != ["disk_low"] and time.monotonic() < deadline:
        status = late.next_json()
    assert status["online"] is True
    for key in ("version", "started_at", "ts", "clock_synced", "disk_free_bytes"):
        assert key in status
    assert status["queue"] == PROVIDED["queue"]
    assert status["custody_head"] == {"seq": 7, "hash": "ab" * 32}
    assert status["alerts"] == ["disk_low"]
    bus.alert("disk_low", "clear", "disk space recovered")
    wait_for(lambda: late.next_json().get("alerts") == [], 5, "alert cleared in status")
    late.close()


def test_bay_view_is_retained(broker: Broker, dock: Any) -> None:
    bus, _pub, _conn = dock
    view = BayView(2, state="offloading", device_id="ZFY1", battery_pct=64.0)
    early = Recorder(broker, "it-2e", f"{ROOT}/bay/+")
    bus.emit(view)
    assert early.next().topic == f"{ROOT}/bay/2"  # the broker has it (and kept it, if retained)
    early.close()
    late = Recorder(broker, "it-2", f"{ROOT}/bay/+")
    msg = late.next()
    bay = json.loads(msg.payload)
    assert msg.topic == f"{ROOT}/bay/2" and msg.retain
    assert bay["state"] == "offloading" and bay["device_id"] == "ZFY1"
    assert set(bay) >= {"officer_id", "clock_offset_s", "storage_free_pct", "progress", "findings"}
    late.close()


def test_bay_rate_limit_keeps_final_state(broker: Broker, dock: Any) -> None:
    bus, _pub, _conn = dock
    watch = Recorder(broker, "it-3", f"{ROOT}/bay/1")
    bus.emit(BayView(1, state="offloading"))
    for i in range(200):
        bus.emit(BayView(1, state="offloading", progress=Progress(clips_done=i, clips_total=200)))
    bus.emit(BayView(1, state="offloading", progress=Progress(clips_done=200, clips_total=200)))
    got: list[dict[str, Any]] = []
    while not got or (got[-1].get("progress") or {}).get("clips_done") != 200:
        got.append(json.loads(watch.next(5).payload))  # until the latest (or no message: fails)
    got += [json.loads(m.payload) for m in watch.drain(0.6)]  # any later one: counted below
    assert 1 <= len(got) <= 6, len(got)  # 200 updates coalesced
    assert got[-1]["progress"]["clips_done"] == 200  # the latest always goes out
    bus.emit(BayView(1, state="ready"))  # a state change is not delayed
    t0 = time.monotonic()
    assert json.loads(watch.next(2).payload)["state"] == "ready"
    assert time.monotonic() - t0 < 0.2
    watch.close()


def test_events_and_alerts_survive_an_outage(broker: Broker, dock: Any) -> None:
    bus, pub, conn = dock
    sink = Recorder(broker, "it-4", f"{ROOT}/events", f"{ROOT}/alerts", persistent=True)
    broker.stop()
    wait_for(lambda: not conn.connected, 5, "disconnect noticed")
    for i in range(5):
        bus.event("clip_offloaded", n=i)
    bus.alert("sync_backlog", "warning", "behind")
    broker.start()
    assert conn.wait_connected(10)
    got = [json.loads(m.payload) for m in (sink.next(10) for _ in range(6))]
    assert [g.get("n") for g in got if g.get("type") == "clip_offloaded"] == [0, 1, 2, 3, 4]
    assert any(g.get("code") == "sync_backlog" for g in got)
    assert pub.dropped == 0
    sink.close()


def test_will_marks_dock_offline(broker: Broker, dock: Any) -> None:
    _bus, pub, conn = dock
    pub.stop()
    conn.stop()
    late = Recorder(broker, "it-5", f"{ROOT}/status")
    assert late.next_json() == {"online": False}
    late.close()
