"""A fresh install with the shipped files (issue 21): no central key, nothing leaves a recorder and
deletes_held says why; with the keys enrolled by `dock-agent keys`, the same docking frees it."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main
from agent.commands.receive import receiver_from_config
from agent.config import load_config
from agent.transfer.receiver.config import load_receiver_config
from agent.trust import keys
from agent.ui.status import read_status
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import running, wait_for

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
SHIPPED = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def install(tmp: Path, broker: Broker) -> tuple[Path, Path]:
    """The shipped dock and receiver configs, with only paths, ports and bays of this machine."""
    dock = (SHIPPED / "dock-agent.toml").read_text()
    for old, new in (
        ('data_dir = "/var/lib/dock-agent"', f'data_dir = "{tmp / "data"}"'),
        ("port = 1883", f"port = {broker.port}"),
        ('listen = "127.0.0.1:8080"', 'listen = ""'),
        ("require_synced_clock = true", "require_synced_clock = false"),  # no NTP on CI
    ):
        assert old in dock, old
        dock = dock.replace(old, new, 1)
    dock = re.sub(r'usb_path = "[^"]*(\d):1\.0"', lambda m: f'sim_dir = "{tmp}/bay{m[1]}"', dock)
    receiver = (SHIPPED / "receiver.toml").read_text()
    for old, new in (
        ('store_dir = "/var/lib/dock-receiver/store"', f'store_dir = "{tmp / "central"}"'),
        ("port = 1883", f"port = {broker.port}"),
        ('"/etc/dock-agent/dock-keys"', f'"{tmp / "dock-keys"}"'),
        ('"/var/lib/dock-receiver/receiver.key"', f'"{tmp / "receiver.key"}"'),
    ):
        assert old in receiver, old
        receiver = receiver.replace(old, new, 1)
    (tmp / "dock-keys").mkdir()
    (tmp / "dock.toml").write_text(dock)
    (tmp / "receiver.toml").write_text(receiver)
    return tmp / "dock.toml", tmp / "receiver.toml"


def run_status(config: Path) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["status", "-c", str(config)]) == 0
    return out.getvalue()


def keys_output(*args: str) -> list[str]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["keys", *args]) == 0
    return out.getvalue().splitlines()


@pytest.mark.parametrize("central_enrolled", [False, True])
def test_a_fresh_install_frees_recorders_only_once_central_is_enrolled(
    tmp_path: Path, broker: Broker, central_enrolled: bool
) -> None:
    dock_toml, receiver_toml = install(tmp_path, broker)
    pub_line, fingerprint = keys_output("-c", str(dock_toml))  # at the dock: its key, made now
    assert pub_line.startswith("ssh-ed25519 ") and pub_line.endswith(" dock-01")
    (tmp_path / "dock-keys" / "dock-01.pub").write_text(pub_line + "\n")  # enrolled at central
    if central_enrolled:
        central_line, _fp = keys_output("--receiver", "-c", str(receiver_toml))
        (tmp_path / "central.pub").write_text(central_line + "\n")
        text = dock_toml.read_text().replace(
            'central_key_file = ""', f'central_key_file = "{tmp_path / "central.pub"}"', 1
        )
        dock_toml.write_text(text)
    cfg = load_config(str(dock_toml))
    receiver = receiver_from_config(load_receiver_config(str(receiver_toml)))
    receiver.start()
    assert receiver.wait_subscribed(10)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    try:
        with running(cfg) as (daemon, _views):
            index = daemon.services.index
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 90, "synced")
            if central_enrolled:
                wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
            else:
                wait_for(lambda: "deletes_held" in codes(cfg), 30, "deletes_held in status")
            status = read_status(cfg)
    finally:
        receiver.stop()
    assert status["key_fingerprint"] == fingerprint
    text = run_status(dock_toml)
    assert f"key: {fingerprint}" in text
    assert ("ALERT deletes_held (warning): mqtt.central_key_file is not set" in text) is not (
        central_enrolled
    )
    assert keys.fingerprint(keys.parse_public(pub_line, "pub")) == fingerprint
    central = tmp_path / "central" / "dock-01"
    assert len([d for d in central.iterdir() if (d / "manifest.json").exists()]) == 2 * len(
        originals
    )
    if central_enrolled:
        assert "deletes_held" not in codes(cfg)
    else:
        assert all(p.exists() for p in originals), "nothing left the recorder"


def codes(cfg: object) -> list[str]:
    return [a["code"] for a in read_status(cfg)["alerts"]]  # type: ignore[arg-type]


def test_an_ack_no_one_proved_frees_nothing_until_central_is_enrolled_and_proves_it(
    tmp_path: Path, broker: Broker
) -> None:
    """Without central's key any broker client could have said "success": such an ack frees
    neither the recorder nor, whatever the retention, the dock's own copy. Once central's key is
    enrolled the clips are sent again, the receipts prove them, and only then do they go."""
    dock_toml, receiver_toml = install(tmp_path, broker)
    text = dock_toml.read_text().replace("local_retention_days = 30", "local_retention_days = 0")
    dock_toml.write_text(text)
    pub_line, _fingerprint = keys_output("-c", str(dock_toml))
    (tmp_path / "dock-keys" / "dock-01.pub").write_text(pub_line + "\n")
    receiver = receiver_from_config(load_receiver_config(str(receiver_toml)))
    receiver.start()
    assert receiver.wait_subscribed(10)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    try:
        cfg = load_config(str(dock_toml))
        with running(cfg) as (daemon, _views):
            index = daemon.services.index
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 90, "synced")
            assert daemon.parts is not None
            assert daemon.parts.purger.run_pass() == []  # retention 0, yet nothing purged
            records = list(index.iter_all())
        assert [r["ack_proven"] for r in records] == [False] * len(originals)
        assert all(Path(r["local_path"]).exists() for r in records), "the dock kept its copies"
        assert all(p.exists() for p in originals), "nothing left the recorder"

        central_line, _fp = keys_output("--receiver", "-c", str(receiver_toml))
        (tmp_path / "central.pub").write_text(central_line + "\n")
        text = dock_toml.read_text().replace(
            'central_key_file = ""', f'central_key_file = "{tmp_path / "central.pub"}"', 1
        )
        dock_toml.write_text(text)
        cfg = load_config(str(dock_toml))
        with running(cfg) as (daemon, _views):
            wait_for(lambda: not any(p.exists() for p in originals), 60, "recorder freed")
    finally:
        receiver.stop()
    entries = [json.loads(line) for line in (tmp_path / "data" / "custody.jsonl").open()]
    synced = [e for e in entries if e["event"] == "clip_synced"]
    proven = [e for e in entries if e["event"] == "clip_ack_proven"]
    assert {e["ack"] for e in synced} == {"unproven"} and len(synced) == len(originals)
    assert {e["ack"] for e in proven} == {"receipt"} and len(proven) == len(originals)
    first_proof = min(e["seq"] for e in proven)
    deleted = [e for e in entries if e["event"] == "recorder_clip_deleted"]
    assert len(deleted) == len(originals) and min(e["seq"] for e in deleted) > first_proof
