"""The chain at central end to end (SPEC 8.1): the daemon, a real Mosquitto, `dock-agent receive`.

A docking's clips and the chain covering them arrive and `receive verify` passes; an entry
rewritten on the dock makes the next chunk a refused fork that deletes nothing; a wiped
dock starts a new chain beside the old; a clip deleted from its recorder that central lost
is named; kill -9 of dock and receiver mid-chunk leaves no gap and no duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.chain.chunk import read_chain_id
from agent.chain.holding import ChainHold
from agent.config import DockConfig, MqttSection
from agent.evidence.custody import CustodyLog, read_head
from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import config_toml, dock_config, enroll, running, wait_for

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

DOCK = "dock-test"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_cfg(tmp_path: Path, broker: Broker, **mqtt: Any) -> DockConfig:
    settings = {"host": broker.host, "port": broker.port, "custody_sync_s": 1, **mqtt}
    return dock_config(tmp_path, mqtt=settings)


def start_receiver(tmp_path: Path, broker: Broker, cls: type[Receiver] = Receiver) -> Receiver:
    rx = cls(
        tmp_path / "central",
        MqttSection(host=broker.host, port=broker.port),
        dock_keys_dir=tmp_path / "dock-keys",
    )
    rx.start()
    assert rx.wait_subscribed(10)
    return rx


def receiver_toml(tmp_path: Path, broker: Broker) -> Path:
    path = tmp_path / "receiver.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n[receiver]\n'
        f'store_dir = "{tmp_path / "central"}"\ndock_keys_dir = "{tmp_path / "dock-keys"}"\n'
    )
    return path


def receive_verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "receive", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def recorder(device: str = "ZFY0012345", minutes_ago: float = 90) -> simkit.SimRecorder:
    start = datetime.now() - timedelta(minutes=minutes_ago)
    return simkit.SimRecorder(
        device_id=device, battery_pct=95, clips=simkit.shift(start, [1, 1, 1])
    )


def hold(tmp_path: Path) -> ChainHold:
    return ChainHold(tmp_path / "central" / DOCK / "_custody")


def central_has_head(tmp_path: Path, cfg: DockConfig) -> bool:
    """Central holds the dock's chain up to the dock's head."""
    log = cfg.data_dir / "custody.jsonl"
    chain = read_chain_id(log)
    return chain is not None and hold(tmp_path).held(chain).last_seq == read_head(log)[0]


def docking(tmp_path: Path, cfg: DockConfig, rec: simkit.SimRecorder) -> list[Path]:
    """Dock `rec`, wait until its recorder is freed and central holds the whole chain."""
    originals = simkit.build(tmp_path / "bay1", rec)
    wait_for(lambda: not any(o.exists() for o in originals), 90, "recorder freed")
    wait_for(lambda: central_has_head(tmp_path, cfg), 60, "central holding the dock's head")
    simkit.undock(tmp_path / "bay1")
    log = cfg.data_dir / "custody.jsonl"  # the undocking ends the docking: its entry goes up
    wait_for(lambda: last_event(log) == "undocked", 30, "the undocked entry")
    wait_for(lambda: central_has_head(tmp_path, cfg), 30, "central holding the undocked entry")
    return originals


def last_event(log: Path) -> str:
    lines = log.read_bytes().splitlines()
    return str(json.loads(lines[-1])["event"]) if lines else ""


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]


def test_a_dockings_clips_and_chain_arrive_and_receive_verify_passes(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = make_cfg(tmp_path, broker)
    enroll(cfg, tmp_path / "dock-keys")
    rx = start_receiver(tmp_path, broker)
    try:
        with running(cfg):
            originals = docking(tmp_path, cfg, recorder())
    finally:
        rx.stop()
    log = cfg.data_dir / "custody.jsonl"
    chain = read_chain_id(log) or ""
    head = read_head(log)[0]
    held = b"".join(line + b"\n" for line in hold(tmp_path).lines(chain, 1, head))
    assert held == log.read_bytes(), "central holds the dock's log byte for byte"
    result = receive_verify(receiver_toml(tmp_path, broker))
    assert result.returncode == 0, result.stdout
    (line,) = [x for x in result.stdout.splitlines() if x.startswith(f"dock {DOCK}:")]
    assert f"{chain} seqs 1-{head}" in line
    assert f"{len(originals)} clips at central, {len(originals)} matched, 0 pending; OK" in line


def test_an_entry_rewritten_on_the_dock_is_a_refused_fork_that_deletes_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = make_cfg(tmp_path, broker)
    enroll(cfg, tmp_path / "dock-keys")
    rx = start_receiver(tmp_path, broker)
    log = cfg.data_dir / "custody.jsonl"
    try:
        with running(cfg):
            docking(tmp_path, cfg, recorder())
        edited = _rewrite_first_offload(log)
        with running(cfg) as (_daemon, views):
            originals = simkit.build(tmp_path / "bay1", recorder("ZFY0099999", 60))
            forks = tmp_path / "central" / DOCK / "_custody" / "forks"
            wait_for(lambda: _fork_seqs(forks) >= {edited}, 90, f"a fork named at seq {edited}")
            wait_for(
                lambda: any(
                    a.code == "sync_failed" and "custody_fork" in a.message for a in views.alerts
                ),
                60,
                "the dock told of the refusal",
            )
            time.sleep(3)  # no-event wait: a deletion for the refused clips would come by now
            assert all(o.exists() for o in originals), "no recorder file deleted for it"
    finally:
        rx.stop()
    result = receive_verify(receiver_toml(tmp_path, broker))
    assert result.returncode == 1
    assert any(f": seq {edited}: a chunk" in x and "custody_fork" in x for x in problems(result)), (
        result.stdout
    )
    received = {d.name for d in (tmp_path / "central" / DOCK).iterdir()}
    assert not {sha(o) for o in originals} & received, "no clip of the new docking was acked"


def _rewrite_first_offload(log: Path) -> int:
    """As root could: the first clip_offloaded entry's file name changed, every hash after redone."""
    from tests.chain_kit import rewrite

    entries = [json.loads(x) for x in log.read_bytes().splitlines()]
    seq = next(e["seq"] for e in entries if e["event"] == "clip_offloaded")
    rewrite(log, seq, file="renamed.MP4")
    return int(seq)


def _fork_seqs(forks: Path) -> set[int]:
    if not forks.is_dir():
        return set()
    return {json.loads(f.read_text())["seq"] for f in forks.glob("*.json")}


def test_a_wiped_dock_starts_a_new_chain_beside_the_old(tmp_path: Path, broker: Broker) -> None:
    key = tmp_path / "keys" / "dock.key"  # kept outside data_dir, as a systemd credential is
    cfg = make_cfg(tmp_path, broker, signing_key_file=str(key))
    enroll(cfg, tmp_path / "dock-keys")
    rx = start_receiver(tmp_path, broker)
    log = cfg.data_dir / "custody.jsonl"
    try:
        with running(cfg):
            docking(tmp_path, cfg, recorder())
            freed_head = read_head(log)[0]  # central held it (docking), before the undocking
        old_chain = read_chain_id(log)
        old_lines = log.read_bytes().splitlines(keepends=True)
        shutil.rmtree(cfg.data_dir)
        with running(cfg):
            docking(tmp_path, cfg, recorder("ZFY0099999", 60))
    finally:
        rx.stop()
    new_chain = read_chain_id(log)
    assert new_chain != old_chain
    assert hold(tmp_path).chains() == [old_chain, new_chain]
    # The undocking's entry goes up at the next chunk, which the stop may have come before.
    held = hold(tmp_path).held(old_chain or "").last_seq
    assert held >= freed_head
    kept = b"".join(x + b"\n" for x in hold(tmp_path).lines(old_chain or "", 1, held))
    assert kept == b"".join(old_lines[:held]), "the old chain kept whole"
    result = receive_verify(receiver_toml(tmp_path, broker))
    assert result.returncode == 0, result.stdout
    (ack,) = [x for x in result.stdout.splitlines() if x.startswith("ACKNOWLEDGE")]
    assert f"chain {new_chain}: a new chain of this dock" in ack


class DroppingReceiver(Receiver):
    """Answers the first clip's fin with success, then loses the clip (a broken central disk)."""

    target = ""

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        super().send_response(topic, correlation, resp)
        parts = resp.topic.split("/")
        if resp.ok and len(parts) >= 3 and parts[2] == "fin" and parts[1] == self.target:
            shutil.rmtree(self.store_dir / DOCK / parts[1], ignore_errors=True)


def test_a_clip_deleted_from_its_recorder_that_central_lost_is_named(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = make_cfg(tmp_path, broker)
    enroll(cfg, tmp_path / "dock-keys")
    rec = recorder()
    originals = simkit.build(tmp_path / "bay1", rec, docked=False)
    DroppingReceiver.target = sha(originals[0])
    rx = start_receiver(tmp_path, broker, DroppingReceiver)
    try:
        with running(cfg):
            simkit.dock(tmp_path / "bay1", rec)
            wait_for(lambda: not any(o.exists() for o in originals), 90, "recorder freed")
            wait_for(lambda: central_has_head(tmp_path, cfg), 60, "central holding the head")
    finally:
        rx.stop()
    result = receive_verify(receiver_toml(tmp_path, broker))
    assert result.returncode == 1
    lost = DroppingReceiver.target
    assert (
        [x for x in problems(result) if lost in x]
        == [
            x
            for x in problems(result)
            if f"recorder_clip_deleted of clip {lost}, which central does not hold" in x
        ]
        != []
    )


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_kill_9_of_dock_and_receiver_mid_chunk_leaves_no_gap_and_no_duplicate(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = make_cfg(tmp_path, broker)
    enroll(cfg, tmp_path / "dock-keys")
    log = cfg.data_dir / "custody.jsonl"
    custody = CustodyLog(log)  # a long history: about 6 chunks of 1 MiB
    for batch in range(20):
        custody.append_many(
            [
                (
                    "clock_checked",
                    {"device_id": f"ZFY{batch:03d}{i:04d}", "offset_s": 0.0, "detail": "x" * 200},
                )
                for i in range(1000)
            ]
        )
    custody.close()
    dock_toml = tmp_path / "dock.toml"
    dock_toml.write_text(
        config_toml(cfg).replace(
            "[ui]",
            "custody_sync_s = 1\nrate_limit_bytes_per_s = 400000\nsegment_bytes = 65536\n[ui]",
        )
    )
    recv_toml = receiver_toml(tmp_path, broker)
    out = tmp_path / "run.log"
    rx = _start(["receive", "-c", str(recv_toml)], out)
    dock = _start(["run", "-c", str(dock_toml)], out)
    try:
        for cut in range(2):
            wait_for(lambda: _mid_chunk(tmp_path), 90, f"a chunk in flight (cut {cut})")
            dock.send_signal(signal.SIGKILL)
            rx.send_signal(signal.SIGKILL)
            dock.wait(10)
            rx.wait(10)
            rx = _start(["receive", "-c", str(recv_toml)], out)
            dock = _start(["run", "-c", str(dock_toml)], out)
        wait_for(lambda: central_has_head(tmp_path, cfg), 180, "the whole chain at central")
    finally:
        for proc in (dock, rx):
            proc.terminate()
            proc.wait(30)
    chain = read_chain_id(log) or ""
    head = read_head(log)[0]
    runs = sorted((hold(tmp_path).root / chain).glob("*.jsonl"))
    lines = [x for run in runs for x in run.read_bytes().splitlines(keepends=True)]
    assert len(lines) == head, "each entry once: no duplicate"
    assert b"".join(lines) == log.read_bytes()[: sum(map(len, lines))], "no gap, byte for byte"
    result = receive_verify(recv_toml)
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in out.read_text(), out.read_text()[-4000:]


def _mid_chunk(tmp_path: Path) -> bool:
    """A custody chunk's transfer has begun at the receiver and is not finished."""
    ddir = tmp_path / "central" / DOCK
    if not ddir.is_dir():
        return False
    return any(d.name != "_custody" and not (d / "manifest.json").exists() for d in ddir.iterdir())


def test_the_undocking_entry_goes_up_when_the_recorder_leaves(
    tmp_path: Path, broker: Broker
) -> None:
    """SPEC 8.1: a chunk goes at the end of each docking; the undocking's entry waited for the
    next period (`custody_sync_s`), and for the sync thread's idle minute besides."""
    cfg = make_cfg(tmp_path, broker, custody_sync_s=3600)
    enroll(cfg, tmp_path / "dock-keys")
    rx = start_receiver(tmp_path, broker)
    try:
        with running(cfg):
            docking(tmp_path, cfg, recorder())  # waits up to 30 s for central to hold it
    finally:
        rx.stop()
    log = cfg.data_dir / "custody.jsonl"
    assert last_event(log) == "undocked" and central_has_head(tmp_path, cfg)
