"""Evidence sync end to end: the daemon, a real Mosquitto, and the reference receiver."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import MqttSection
from agent.evidence.custody import iter_entries
from agent.evidence.index import ClipIndex
from agent.evidence.retention.rules import select_purges
from agent.sync.queue import Backoff
from agent.timebase import parse_iso
from agent.transfer import protocol as p
from agent.transfer.receiver import trustdir
from agent.transfer.receiver.server import Receiver
from agent.transfer.receiver.trustdir import fin_nonce
from firmware_interface import simkit
from tests.broker import Broker, free_port, mosquitto_binary, running_broker
from tests.dock import config_toml, count_status_reads, dock_config, running, settled, wait_for
from tests.mqtt_helpers import Recorder

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

RECEIVER_ID = "dock-receiver"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def start_receiver(store: Path, broker: Broker) -> Receiver:
    receiver = Receiver(store, MqttSection(host=broker.host, port=broker.port), RECEIVER_ID)
    receiver.start()
    assert receiver.wait_subscribed(10)
    return receiver


def _held(store: Path, client_id: str) -> dict[str, Path]:
    """file_id -> the one file the receiver holds under it (with its user_data).

    A custody chunk's transfer directory is removed once the chunk is filed under `_custody/`,
    so a directory listed a moment ago may be gone: it held no clip."""
    out = {}
    for d in (store / client_id).glob("*"):
        try:
            listed = list(d.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        files = [
            f
            for f in listed
            if f.is_file() and f.name != "manifest.json" and not f.name.startswith(".")
        ]
        if (d / "manifest.json").exists() and len(files) == 1:
            out[d.name] = files[0]
    return out


def received(store: Path, client_id: str = "dock-test") -> dict[str, Path]:
    """file_id -> the clip file the receiver holds, once its manifest file is there too (SPEC 7.1)."""
    held = _held(store, client_id)
    manifests = {f.name for f in held.values() if f.name.endswith(".manifest.json")}
    return {
        k: f
        for k, f in held.items()
        if not f.name.endswith(".manifest.json") and f"{f.name}.manifest.json" in manifests
    }


def chunk(transfer_dir: Path) -> bool:
    """Whether a transfer at the receiver is a custody chunk (SPEC 8.1), whole or cut by a kill:
    a chunk cut short is sent again covering more entries, so under another file id."""
    for init in (transfer_dir / ".partial" / "init.json", transfer_dir / ".init.json"):
        if init.is_file():
            user_data = json.loads(init.read_bytes()).get("user_data") or {}
            return user_data.get("kind") == "custody"
    return False


def full_manifest(store: Path, clip: Path, client_id: str = "dock-test") -> dict:
    """The clip's MANIFEST, sent as its own file `{clip name}.manifest.json`."""
    (found,) = [
        f for f in _held(store, client_id).values() if f.name == f"{clip.name}.manifest.json"
    ]
    return json.loads(found.read_text())


def custody_seq(data: Path, event: str) -> dict[str, int]:
    return {
        e["sha256"]: e["seq"] for e in iter_entries(data / "custody.jsonl") if e["event"] == event
    }


def recorder(hours_ago: float = 2, battery: float = 95) -> simkit.SimRecorder:
    start = datetime.now() - timedelta(hours=hours_ago)
    clips = simkit.shift(start, [2, 2, 1]) + [
        simkit.SimClip(start + timedelta(minutes=30), 1, "JPG")
    ]
    return simkit.SimRecorder(battery_pct=battery, clips=clips)


def test_every_clip_arrives_with_hash_and_manifest_then_recorder_freed(
    tmp_path: Path, broker: Broker
) -> None:
    store = tmp_path / "central"
    receiver = start_receiver(store, broker)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    rec = recorder()
    originals = simkit.build(tmp_path / "bay1", rec)
    try:
        with running(cfg) as (daemon, views):
            wait_for(lambda: len(received(store)) == len(originals), 60, "clips at the receiver")
            wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
            wait_for(lambda: views.latest(1).state == "ready", 30, "bay ready")  # type: ignore[union-attr]
            records = {r["sha256"]: r for r in daemon.services.index.iter_all()}
    finally:
        receiver.stop()
    got = received(store)
    assert sorted(got) == sorted(records)
    for file_id, path in got.items():
        assert sha(path) == file_id
        manifest = full_manifest(store, path)
        compact = json.loads((path.parent / "manifest.json").read_text())
        assert len(json.dumps(compact).encode()) <= 1024
        assert (
            compact["manifest_sha256"]
            == hashlib.sha256(
                (store / "dock-test" / compact["manifest_sha256"])
                .joinpath(f"{path.name}.manifest.json")
                .read_bytes()
            ).hexdigest()
        )
        r = records[file_id]
        assert manifest["sha256"] == file_id and manifest["size"] == path.stat().st_size
        assert manifest["file_name"] == path.name == r["file_name"]
        assert manifest["device_id"] == rec.device_id and manifest["dock_id"] == "dock-test"
        assert manifest["custody_seq"] == r["custody_seq"]
        for key in (
            "recorded_start",
            "recorded_end",
            "recorded_tz",
            "start_source",
            "flags",
            "retention_class",
            "notes",
            "offloaded_at",
            "decode_ok",
        ):
            assert key in manifest, key
        assert r["state"] == "synced"
    synced = custody_seq(cfg.data_dir, "clip_synced")
    deleted = custody_seq(cfg.data_dir, "recorder_clip_deleted")
    assert sorted(deleted) == sorted(synced) == sorted(records)
    assert all(synced[c] < deleted[c] for c in synced), "deleted only after its fin succeeded"


def test_offline_dock_keeps_everything_then_catches_up(tmp_path: Path) -> None:
    broker = Broker(port=free_port(), workdir=tmp_path / "broker")
    broker.workdir.mkdir()
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    rec = recorder()
    originals = simkit.build(tmp_path / "bay1", rec)
    store = tmp_path / "central"
    with running(cfg) as (daemon, views):
        wait_for(
            lambda: (
                len([r for r in daemon.services.index.iter_all() if r["analysed"]])
                == len(originals)
            ),
            60,
            "offload while offline",
        )
        wait_for(lambda: settled(daemon, views, 1), 30, "bay 1 settled")
        reads = count_status_reads(daemon.bays[1].recorder)
        wait_for(lambda: reads[0] >= 3, 10, "3 refreshes: a deletion would come by then")
        assert all(p.exists() for p in originals), "nothing leaves the recorder without an ack"
        assert {r["state"] for r in daemon.services.index.iter_all()} == {"offloaded"}
        broker.start()
        receiver = start_receiver(store, broker)
        try:
            wait_for(lambda: len(received(store)) == len(originals), 90, "catch-up sync")
            wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
        finally:
            receiver.stop()
            daemon.stop()
            broker.stop()


def test_clips_analysed_before_a_restart_are_sent_after_it(tmp_path: Path) -> None:
    """No step names them again (the recorder is gone): sync's start-up scan finds them once."""
    broker = Broker(port=free_port(), workdir=tmp_path / "broker")
    broker.workdir.mkdir()
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    originals = simkit.build(tmp_path / "bay1", recorder())
    shas = {sha(p) for p in originals}
    with running(cfg) as (daemon, _views):
        wait_for(
            lambda: (
                sum(1 for r in daemon.services.index.iter_all() if r["analysed"]) == len(originals)
            ),
            60,
            "offload and analysis while offline",
        )
    (tmp_path / "bay1").rename(tmp_path / "away")  # undocked while the dock was down
    store = tmp_path / "central"
    broker.start()
    receiver = start_receiver(store, broker)
    try:
        with running(cfg) as (daemon, _views):
            wait_for(lambda: len(received(store)) == len(originals), 90, "sync after restart")
            index = daemon.services.index
            wait_for(
                lambda: {r["sha256"] for r in index.iter_all() if r.get("synced_at")} == shas,
                30,
                "every clip acked",
            )
        acks = [
            e["sha256"]
            for e in iter_entries(cfg.data_dir / "custody.jsonl")
            if e["event"] == "clip_synced"
        ]
        assert sorted(acks) == sorted(shas), "each clip acked once"
    finally:
        receiver.stop()
        broker.stop()


def test_note_explained_after_sync_goes_on_r_notes(tmp_path: Path, broker: Broker) -> None:
    store = tmp_path / "central"
    receiver = start_receiver(store, broker)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    start = datetime.now() - timedelta(hours=1)
    rec = simkit.SimRecorder(
        clips=[simkit.SimClip(start, 2), simkit.SimClip(start + timedelta(seconds=60), 2)]
    )
    simkit.build(tmp_path / "bay1", rec)
    watcher = Recorder(broker, "central-notes", "dock/dock-test/notes")
    config_file = tmp_path / "dock.toml"
    config_file.write_text(config_toml(cfg))
    try:
        with running(cfg) as (daemon, _views):
            wait_for(lambda: len(received(store)) == 2, 60, "clips synced")
            manifest = full_manifest(store, next(iter(received(store).values())))
            gap_notes = [n for n in manifest["notes"] if n["type"] == "gap"]
            assert len(gap_notes) == 1 and 55 <= gap_notes[0]["duration_s"] <= 61
            note_id = gap_notes[0]["note_id"]
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "notes",
                    "add",
                    note_id,
                    "--author",
                    "王警官",
                    "--text",
                    "换电池",
                    "-c",
                    str(config_file),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stderr
            msg = watcher.next_json("dock/dock-test/notes", timeout=20)
    finally:
        receiver.stop()
    assert msg["note_id"] == note_id and msg["change"] == "explained"
    assert (
        msg["explanations"][-1]["author"] == "王警官"
        and msg["explanations"][-1]["text"] == "换电池"
    )


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_kill_agent_and_broker_at_random_during_60mb_transfer(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    broker = Broker(port=free_port(), workdir=tmp_path / "broker")
    broker.workdir.mkdir()
    broker.start()
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    now = datetime.now()
    rec = simkit.SimRecorder(battery_pct=95, clips=[])
    bay = tmp_path / "bay1"
    originals = []
    for i in range(6):
        path = (
            bay
            / "DCIM"
            / "100MEDIA"
            / f"{rec.device_id}_{rec.officer_id}_{now - timedelta(minutes=10 - i):%Y%m%d%H%M%S}_{i:04d}.MP4"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(10 * 2**20))
        originals.append(path)
    expected = {sha(p) for p in originals}
    simkit.dock(bay, rec)
    config_file = tmp_path / "dock.toml"
    config_file.write_text(config_toml(cfg))
    recv_config = tmp_path / "receiver.toml"
    store = tmp_path / "central"
    recv_config.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n[receiver]\nstore_dir = "{store}"\n'
    )
    log = tmp_path / "run.log"
    recv = _start(["receive", "-c", str(recv_config)], log)
    agent = _start(["run", "-c", str(config_file)], log)
    try:
        for _ in range(4):
            time.sleep(rng.uniform(1.0, 3.0))
            if rng.random() < 0.5:
                agent.send_signal(signal.SIGKILL)
                agent.wait(10)
                agent = _start(["run", "-c", str(config_file)], log)
            else:
                broker.stop(kill=True)
                time.sleep(rng.uniform(0.2, 1.5))
                broker.start()
        wait_for(
            lambda: set(received(store)) == expected,
            180,
            f"all clips at the receiver (seed {seed})",
        )
        wait_for(lambda: not any(p.exists() for p in originals), 60, "recorder freed")
    finally:
        agent.terminate()
        agent.wait(30)
        recv.terminate()
        recv.wait(30)
        broker.stop()
    for file_id, path in received(store).items():
        assert sha(path) == file_id, f"seed {seed}"
    index = ClipIndex(cfg.data_dir)
    states = {r["sha256"]: r["state"] for r in index.iter_all()}
    index.close()
    assert set(states) == expected and set(states.values()) == {"synced"}, f"seed {seed}"
    dirs = [d for d in (store / "dock-test").iterdir() if d.name != "_custody" and not chunk(d)]
    assert len(dirs) == 2 * len(expected), "each clip and its manifest once at the receiver"
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def test_resync_command_sends_a_clip_again_and_refuses_unknown(
    tmp_path: Path, broker: Broker
) -> None:
    from tests.test_it_monitoring import command

    store = tmp_path / "central"
    receiver = start_receiver(store, broker)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    simkit.build(tmp_path / "bay1", recorder())
    it = Recorder(broker, "it-resync", "dock/dock-test/cmd/resync/reply")
    try:
        with running(cfg) as (daemon, _views):
            wait_for(lambda: len(received(store)) == 4, 60, "clips synced")
            clip_id, path = next(iter(received(store).items()))
            path.unlink()  # central lost it
            command(
                it,
                "dock/dock-test/cmd/resync",
                json.dumps({"clip_id": clip_id}).encode(),
            )
            reply = json.loads(it.next(timeout=10).payload)
            assert reply["ok"] is True and reply["result"]["queued"] == clip_id
            wait_for(lambda: path.exists() and sha(path) == clip_id, 30, "the clip sent again")
            command(
                it,
                "dock/dock-test/cmd/resync",
                json.dumps({"clip_id": "f" * 64}).encode(),
            )
            refused = json.loads(it.next(timeout=10).payload)
    finally:
        receiver.stop()
    assert refused == {"ok": False, "error": f"resync: no clip {'f' * 64} on this dock"}


class RefusingManifests(Receiver):
    """The reference receiver, except that while `refusing` it refuses a manifest's fin (0x80,
    signed as the receiver signs every refusal of a fin: the dock acts on it at once)."""

    refusing = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fins: list[str] = []  # file ids whose fin was answered success

    def _apply(
        self, store: Any, client_id: str, req: p.Request, data: bytes, props: Any
    ) -> str | None:
        got = super()._apply(store, client_id, req, data, props)
        if isinstance(req, p.Fin):
            where = self.store_dir / "dock-test" / req.file_id
            if self.refusing and list(where.glob("*.manifest.json")):
                refused = p.ProtocolError(0x80, "test: manifest refused")
                trustdir.sign_refusal(refused, self.signing_key, client_id, req, fin_nonce(data))
                raise refused
            if where.exists():  # not a custody chunk
                self.fins.append(req.file_id)
        return got


def test_a_clip_is_acked_only_with_its_manifest_and_not_sent_again_for_it(
    tmp_path: Path, broker: Broker
) -> None:
    store = tmp_path / "central"
    receiver = RefusingManifests(
        store, MqttSection(host=broker.host, port=broker.port), RECEIVER_ID
    )
    receiver.start()
    assert receiver.wait_subscribed(10)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    try:
        with running(cfg, sync_backoff=Backoff(1.0)) as (daemon, views):
            index = daemon.services.index
            wait_for(
                lambda: (
                    len({a.fields.get("sha256") for a in views.alerts if a.code == "sync_failed"})
                    == len(originals)
                ),
                60,
                "every clip failed on its manifest",
            )
            assert sorted(receiver.fins) == sorted(sha(p) for p in originals), "clips held"
            assert {r["state"] for r in index.iter_all()} == {"offloaded"}
            assert all(p.exists() for p in originals), "not acked without the manifest"
            receiver.refusing = False
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
            wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
    finally:
        receiver.stop()
    clip_fins = [f for f in receiver.fins if f in {sha(p) for p in received(store).values()}]
    assert sorted(clip_fins) == sorted(received(store)), (
        "each clip sent once, only its manifest again"
    )


def test_the_daemon_connection_serves_puback_mode(tmp_path: Path, broker: Broker) -> None:
    """ack_mode = "puback" (EMQX before 5.3.2) runs through the daemon's own MQTT connection.

    On Mosquitto every PUBACK says success, even with nobody receiving: the clip is counted
    as acked without any receiver, which is why SPEC 7.1 allows this mode on EMQX only.
    """
    cfg = dock_config(
        tmp_path,
        mqtt={"host": broker.host, "port": broker.port, "ack_mode": "puback", "upstream": "emqx"},
        delete_from_recorder="never",
    )
    simkit.build(tmp_path / "bay1", recorder())
    with running(cfg) as (daemon, _views):
        wait_for(
            lambda: (
                (rows := list(daemon.services.index.iter_all()))
                and all(r["state"] == "synced" for r in rows)
            ),
            60,
            "every clip acked by PUBACK alone",
        )
    assert custody_seq(cfg.data_dir, "clip_synced")


def test_a_clip_marked_by_analysis_after_offload_goes_with_its_class_and_stays_longer(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Offload stores `routine`; analysis finds the mark (shipped rule: marked -> evidence,
    90 days) and stores the class with the flag: the manifest says evidence, purging keeps it,
    and no later pass had to correct a stored class."""
    caplog.set_level(logging.INFO, logger="agent.evidence.retention.purger")
    store = tmp_path / "central"
    receiver = start_receiver(store, broker)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    start = datetime.now() - timedelta(hours=1)
    clips = [simkit.SimClip(start, 2), simkit.SimClip(start + timedelta(minutes=10), 2)]
    mark = (clips[1].start_local + timedelta(seconds=1)).isoformat(timespec="seconds")
    rec = simkit.SimRecorder(clips=clips, events=[{"ts": mark, "event": "mark"}])
    originals = simkit.build(tmp_path / "bay1", rec)
    try:
        with running(cfg) as (daemon, _views):
            index = daemon.services.index
            wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
            records = {r["file_name"]: r for r in index.iter_all()}
    finally:
        receiver.stop()
    plain, marked = (records[clip.name] for clip in originals)
    assert "marked" in marked["flags"] and "marked" not in plain["flags"]
    sent = {f.name: full_manifest(store, f) for f in received(store).values()}
    assert sent[originals[1].name]["retention_class"] == marked["retention_class"] == "evidence"
    assert sent[originals[0].name]["retention_class"] == plain["retention_class"] == "routine"
    synced = max(parse_iso(r["synced_at"]) for r in records.values())
    days = cfg.policy.local_retention_days
    for after, purged in ((days + 1, [plain]), (91, [plain, marked])):
        chosen = select_purges(
            records.values(), synced + timedelta(days=after), cfg.policy, 1, 1, cfg.retention
        )
        assert sorted(c for c, _ in chosen) == sorted(r["clip_id"] for r in purged), after
    assert not [r for r in caplog.records if "reclassified" in r.getMessage()]
