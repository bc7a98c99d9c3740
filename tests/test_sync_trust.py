"""SPEC 11 on the dock: a broker client that answers for the receiver cannot make a clip synced."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.evidence.custody import iter_entries
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import FileSender, SendSettings, TransferFailed
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import Views, dock_config, running, wait_for
from tests.transfer_kit import close, connect, random_file

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


class Sniffer:
    """An attacker on the broker: reads `$file/#` and answers "success" to every command at once."""

    def __init__(self, broker: Broker, receipt: str | None = None) -> None:
        self.receipt = receipt
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
        self.fins += "/fin/" in msg.topic
        body: dict[str, object] = {
            "vsn": "0.1",
            "topic": msg.topic,
            "packet_id": msg.mid,
            "reason_code": 0,
            "reason_description": "success",
        }
        if self.receipt is not None:
            body["receipt"] = self.receipt
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = msg.properties.CorrelationData
        client.publish(reply_to, json.dumps(body), qos=1, properties=props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def keyed_dock(tmp_path: Path, broker: Broker) -> tuple[object, list[Path]]:
    key_file = tmp_path / "dock-test.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    key_file.chmod(0o600)
    mqtt_cfg = {
        "host": broker.host,
        "port": broker.port,
        "transfer_key_file": str(key_file),
        "fin_timeout_s": 0.5,
    }
    cfg = dock_config(tmp_path, mqtt=mqtt_cfg)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    return cfg, originals


def receipt_alerts(views: Views) -> list[str]:
    return [a.message for a in views.alerts if a.code == "receipt_invalid"]


@pytest.mark.parametrize("receipt", [None, "0" * 64])
def test_forged_success_without_a_receiver_syncs_and_deletes_nothing(
    tmp_path: Path, broker: Broker, receipt: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    sniffer = Sniffer(broker, receipt)
    cfg, originals = keyed_dock(tmp_path, broker)
    try:
        with running(cfg) as (daemon, views):  # type: ignore[arg-type]
            index = daemon.services.index
            wait_for(lambda: len(receipt_alerts(views)) >= 2, 60, "receipt_invalid alerts")
            assert sniffer.fins >= 2, "the forger answered fins"
            assert {r["state"] for r in index.iter_all()} == {"offloaded"}
            assert all(p.exists() for p in originals), "nothing left the recorder"
            assert all("no valid receipt" in m for m in receipt_alerts(views))
            assert not any(a.code == "sync_failed" for a in views.alerts)
    finally:
        sniffer.close()
    events = {e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")}  # type: ignore[attr-defined]
    assert not events & {"clip_synced", "recorder_clip_deleted"}
    key_text = (tmp_path / "dock-test.key").read_text().strip()
    assert all(key_text not in str(a.message) for a in views.alerts)
    assert key_text not in caplog.text, "the transfer key is never logged"


def held_by(store: Path, client_id: str = "dock-test") -> dict[str, str]:
    """file id -> SHA-256 of the one file the receiver holds under it."""
    out = {}
    for d in (store / client_id).glob("*"):
        files = [
            f
            for f in d.iterdir()
            if f.is_file() and f.name != "manifest.json" and not f.name.startswith(".")
        ]
        if len(files) == 1:
            out[d.name] = hashlib.sha256(files[0].read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("receiver_knows_the_key", [True, False])
def test_forged_success_beside_the_real_receiver_counts_for_nothing(
    tmp_path: Path, broker: Broker, receiver_knows_the_key: bool
) -> None:
    cfg, originals = keyed_dock(tmp_path, broker)
    keys = tmp_path / "dock-keys"
    keys.mkdir()
    dock_key = (tmp_path / "dock-test.key").read_text()
    (keys / "dock-test.key").write_text(
        dock_key if receiver_knows_the_key else os.urandom(32).hex()
    )
    store = tmp_path / "central"
    receiver = Receiver(store, MqttSection(host=broker.host, port=broker.port), dock_keys_dir=keys)
    receiver.start()
    assert receiver.wait_subscribed(10)
    sniffer = Sniffer(broker)
    try:
        with running(cfg) as (daemon, views):  # type: ignore[arg-type]
            index = daemon.services.index
            if receiver_knows_the_key:
                wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
                wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
            else:
                wait_for(lambda: len(views.alerts) >= 2, 60, "failures")
                assert sniffer.fins >= 1
            records = list(index.iter_all())
    finally:
        sniffer.close()
        receiver.stop()
    held = held_by(store)
    synced = [r for r in records if r["state"] == "synced"]
    assert all(held.get(r["sha256"]) == r["sha256"] for r in synced), "synced means held intact"
    if receiver_knows_the_key:
        assert len(synced) == len(originals)
        assert receipt_alerts(views), "the forged answers were noticed"
    else:
        assert synced == [] and held == {}, "a receiver without the dock's key stores nothing"
        assert all(p.exists() for p in originals)
        events = {e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")}  # type: ignore[attr-defined]
        assert not events & {"clip_synced", "recorder_clip_deleted"}


def test_a_transfer_begun_under_an_old_key_is_signed_again_with_the_new(
    tmp_path: Path, broker: Broker
) -> None:
    old, new = os.urandom(32), os.urandom(32)
    keys = tmp_path / "dock-keys"
    keys.mkdir()
    (keys / "dock-01.key").write_text(new.hex())  # the key was rotated at the receiver first
    store = tmp_path / "central"
    receiver = Receiver(store, MqttSection(host=broker.host, port=broker.port), dock_keys_dir=keys)
    receiver.start()
    assert receiver.wait_subscribed(10)
    client, link = connect(broker, "dock-01")
    settings = SendSettings(segment_bytes=65536, ack_timeout_s=2.0, fin_timeout_s=5.0)
    try:
        src = tmp_path / "clip.MP4"
        fid = random_file(src, 4 * 65536)
        with pytest.raises(TransferFailed, match="reason code 135"):  # 0x87: not authorized
            FileSender(link, "dock-01", tmp_path / "state", settings, old).send(
                src, fid, "clip.MP4", 4 * 65536, {}
            )
        FileSender(link, "dock-01", tmp_path / "state", settings, new).send(
            src, fid, "clip.MP4", 4 * 65536, {}
        )
    finally:
        close(client)
        receiver.stop()
    assert held_by(store, "dock-01")[fid] == fid
