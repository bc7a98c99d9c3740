"""SPEC 11 on the dock: a broker client that answers for the receiver frees no recorder, costs no time."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import DockConfig, MqttSection
from agent.daemon.reporting import Reporting
from agent.evidence.custody import iter_entries
from agent.sync.queue import Backoff
from agent.transfer.receiver.server import Receiver
from agent.ui.status import read_status
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import Views, count_status_reads, dock_config, enroll, running, wait_for

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


class Sniffer:
    """An attacker on the broker: reads `$file/#` and answers "success" to every command at once.

    `replay`: the answer payload it sends to fins instead (e.g. a genuine answer recorded
    earlier, receipt included).
    """

    def __init__(
        self, broker: Broker, receipt: str | None = None, replay: bytes = b"", code: int = 0
    ) -> None:
        self.receipt = receipt
        self.code = code
        self.replay = replay
        self.fins = 0
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="sniffer", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_a: c.subscribe("$file/#", 1)
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = self._answer
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10)

    def _answer(self, client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        reply_to = getattr(msg.properties, "ResponseTopic", None)
        if not reply_to:
            return
        fin = "/fin/" in msg.topic
        self.fins += fin
        body: dict[str, object] = {
            "vsn": "0.1",
            "topic": msg.topic,
            "packet_id": msg.mid,
            "reason_code": self.code,
            "reason_description": "success" if self.code == 0 else "checksum_mismatch",
        }
        if self.receipt is not None:
            body["receipt"] = self.receipt
        payload = self.replay if fin and self.replay else json.dumps(body).encode()
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        client.publish(reply_to, payload, qos=1, properties=props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def docked(tmp_path: Path, broker: Broker, **mqtt: Any) -> tuple[DockConfig, list[Path]]:
    mqtt_cfg = {"host": broker.host, "port": broker.port, **mqtt}
    cfg = dock_config(tmp_path, mqtt=mqtt_cfg)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    return cfg, originals


def receiver_for(cfg: DockConfig, tmp_path: Path, knows_the_dock: bool = True) -> Receiver:
    keys_dir = tmp_path / "dock-keys"
    keys_dir.mkdir(exist_ok=True)
    if knows_the_dock:
        enroll(cfg, keys_dir)
    rx = Receiver(
        tmp_path / "central",
        MqttSection(host=cfg.mqtt.host, port=cfg.mqtt.port),
        dock_keys_dir=keys_dir,
    )
    rx.start()
    assert rx.wait_subscribed(10)
    return rx


def alerts(views: Views, code: str) -> list[Any]:
    return [a for a in views.alerts if a.code == code]


def custody_events(cfg: DockConfig) -> set[str]:
    return {e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")}


def held_by(store: Path, client_id: str = "dock-test") -> dict[str, str]:
    """file id -> SHA-256 of the one file the receiver holds under it (a custody chunk's
    transfer directory may vanish while this looks: it is filed under `_custody/`)."""
    out = {}
    for d in (store / client_id).glob("*"):
        try:
            files = [
                f
                for f in d.iterdir()
                if f.is_file() and f.name != "manifest.json" and not f.name.startswith(".")
            ]
            if len(files) == 1:
                out[d.name] = hashlib.sha256(files[0].read_bytes()).hexdigest()
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def test_shipped_defaults_with_a_forger_and_no_receiver_delete_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    """Issue 21: on the defaults a forger's "success" emptied the recorder."""
    sniffer = Sniffer(broker)
    cfg, originals = docked(tmp_path, broker, central_key_file="", fin_timeout_s=0.5)
    try:
        with running(cfg) as (daemon, views):
            index = daemon.services.index
            wait_for(lambda: sniffer.fins >= 2 * len(originals), 60, "the forger's fin answers")
            wait_for(lambda: alerts(views, "deletes_held"), 30, "deletes_held")
            reads = count_status_reads(daemon.bays[1].recorder)
            wait_for(lambda: reads[0] >= 3, 10, "3 refreshes: a deletion would follow by then")
            assert all(p.exists() for p in originals), "nothing left the recorder"
            records = list(index.iter_all())
            # The state file is written at the next housekeeping tick (0.5 s) after the alert.
            wait_for(
                lambda: "deletes_held" in [a["code"] for a in read_status(cfg)["alerts"]],
                10,
                "the status file shows deletes_held",
            )
            status = read_status(cfg)
            published = next(p for p in daemon.plugins if isinstance(p, Reporting)).status_payload()
    finally:
        sniffer.close()
    assert len(records) == len(originals)
    assert published["key_fingerprint"] == status["key_fingerprint"]  # R/status
    assert "recorder_clip_deleted" not in custody_events(cfg)
    held = alerts(views, "deletes_held")[0]
    assert "central_key_file" in held.message and held.severity == "warning"
    assert "deletes_held" in [a["code"] for a in status["alerts"]]
    assert status["key_fingerprint"].startswith("SHA256:")


def test_a_forger_without_a_receiver_acks_nothing_and_is_told_once_per_clip(
    tmp_path: Path, broker: Broker
) -> None:
    sniffer = Sniffer(broker, "0" * 128)
    cfg, originals = docked(tmp_path, broker, fin_timeout_s=0.5)
    try:
        with running(cfg, sync_backoff=Backoff(0.5)) as (daemon, views):
            index = daemon.services.index
            wait_for(lambda: sniffer.fins >= 12, 90, "several rounds of forged fins")
            assert {r["state"] for r in index.iter_all()} == {"offloaded"}
            assert all(p.exists() for p in originals), "nothing left the recorder"
    finally:
        sniffer.close()
    told = Counter(
        a.fields.get("sha256")
        for a in alerts(views, "receipt_invalid")
        if a.fields.get("kind") != "custody"  # the chain's chunks are told of on their own
    )
    assert sorted(told.values()) == [1] * len(originals), told  # once per clip, not per answer
    assert not custody_events(cfg) & {"clip_synced", "recorder_clip_deleted"}


@pytest.mark.parametrize("receipt", [None, "0" * 128, "é"])
def test_a_forger_beside_the_real_receiver_costs_no_time_and_is_told_once_per_clip(
    tmp_path: Path, broker: Broker, receipt: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21: each forged answer made the dock wait out fin_timeout_s (330 s) per clip."""
    cfg, originals = docked(tmp_path, broker)  # fin_timeout_s 330, as shipped
    receiver = receiver_for(cfg, tmp_path)
    sniffer = Sniffer(broker, receipt)
    try:
        with running(cfg) as (daemon, views):
            index = daemon.services.index
            began = time.monotonic()
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
            took = time.monotonic() - began
            wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
            records = list(index.iter_all())
    finally:
        sniffer.close()
        receiver.stop()
    assert took < 60 and sniffer.fins >= len(originals)
    held = held_by(tmp_path / "central")
    assert {r["sha256"] for r in records} <= set(held) and all(k == v for k, v in held.items())
    told = Counter(
        a.fields.get("sha256")
        for a in alerts(views, "receipt_invalid")
        if a.fields.get("kind") != "custody"  # the chain's chunks are told of on their own
    )
    # Once per clip, never per answer; a clip whose genuine answer came before the forger's
    # (the receiver can be that quick) has nothing to tell: the late answer is dropped unseen.
    clips = {r["sha256"] for r in records}
    judged = {
        r.args[0] for r in caplog.records if r.name == "agent.transfer.signing" and r.args
    } & clips  # the clips' own fins the dock saw forged answers to (manifests' fins also count)
    assert set(told.values()) <= {1} and judged <= set(told) <= clips, (told, judged)


def test_a_receiver_without_the_docks_key_stores_nothing_and_frees_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    cfg, originals = docked(tmp_path, broker, fin_timeout_s=0.5)
    receiver = receiver_for(cfg, tmp_path, knows_the_dock=False)
    try:
        with running(cfg) as (_daemon, views):
            wait_for(lambda: alerts(views, "sync_failed"), 60, "a refused sync")
    finally:
        receiver.stop()
    assert held_by(tmp_path / "central") == {}
    assert all(p.exists() for p in originals)
    assert not custody_events(cfg) & {"clip_synced", "recorder_clip_deleted"}


@pytest.mark.parametrize("code", [0x80, 0x97])
def test_forged_failures_beside_the_real_receiver_cost_no_round_and_no_pause(
    tmp_path: Path, broker: Broker, code: int
) -> None:
    """A failure anyone on the broker can send waits for the receiver's proved answer."""
    cfg, originals = docked(tmp_path, broker)
    receiver = receiver_for(cfg, tmp_path)
    sniffer = Sniffer(broker, code=code)
    try:
        with running(cfg) as (daemon, views):
            index = daemon.services.index
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
            wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
    finally:
        sniffer.close()
        receiver.stop()
    assert sniffer.fins >= len(originals)
    assert not alerts(views, "sync_failed"), "no round failed, the queue never paused"
