"""The sync worker's lanes (agent/sync/lanes.py): one clip's round trips overlap another's.

Through a link with a 200 ms round trip (tests/bench/linkproxy.py) a docking's clips arrive
in far fewer round trips than one transfer at a time needs, each byte-exact, each ack proved
by central's receipt, the chain verified by `receive verify`, the recorder freed only after
the acks. A clip whose fin central never answers holds only its own lane. The window the
lanes share is unit-tested below.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.evidence.custody import iter_entries
from agent.sync.queue import Backoff
from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.window import Window, share
from firmware_interface import simkit
from tests.bench.linkproxy import LinkProxy
from tests.broker import Broker, free_port, running_broker
from tests.dock import dock_config, enroll, running, wait_for
from tests.test_chain_e2e import receive_verify, receiver_toml, sha, start_receiver

RTT = 0.2
CLIPS = 12


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def docking(n: int = CLIPS) -> simkit.SimRecorder:
    start = datetime.now() - timedelta(hours=2)
    return simkit.SimRecorder(battery_pct=95, clips=simkit.shift(start, [1] * n))


def custody(data: Path, event: str) -> dict[str, dict]:
    return {e["sha256"]: e for e in iter_entries(data / "custody.jsonl") if e["event"] == event}


def synced(daemon: object) -> int:
    index = daemon.services.index  # type: ignore[attr-defined]
    return sum(1 for r in index.iter_all() if r.get("synced_at"))


def test_a_dockings_clips_overlap_on_a_slow_link(tmp_path: Path, broker: Broker) -> None:
    port = free_port()  # the dock's link: nothing there until every clip is analysed
    cfg = dock_config(tmp_path, mqtt={"host": "127.0.0.1", "port": port, "custody_sync_s": 1})
    enroll(cfg, tmp_path / "dock-keys")
    rx = start_receiver(tmp_path, broker)
    originals = simkit.build(tmp_path / "bay1", docking())
    expected = sorted(sha(o) for o in originals)
    proxy = None
    try:
        with running(cfg) as (daemon, _views):
            index = daemon.services.index
            wait_for(lambda: sum(1 for r in index.iter_all() if r["analysed"]) == CLIPS, 60)
            proxy = LinkProxy((broker.host, broker.port), 5_000_000, RTT, port=port)
            sync = daemon.parts.sync  # type: ignore[union-attr]
            wait_for(lambda: sync.busy, 60, "the first clip on a lane")
            started = time.monotonic()
            wait_for(lambda: synced(daemon) == CLIPS, 60, "every clip acked")
            seconds = time.monotonic() - started
            wait_for(lambda: not any(o.exists() for o in originals), 30, "recorder freed")
    finally:
        rx.stop()
        if proxy is not None:
            proxy.close()
    # One at a time, each transfer costs 3 round trips at least (init, the segments' answers,
    # fin): the custody chunk, then each clip and its manifest file. The lanes overlap them.
    sequential = (1 + 2 * CLIPS) * 3 * RTT
    assert seconds < sequential / 2, f"{seconds:.1f} s; one at a time needs {sequential:.1f} s"
    held = {sha(f): f for f in (tmp_path / "central" / "dock-test").glob("*/*.MP4") if f.is_file()}
    assert sorted(held) == expected, "every clip byte-exact at central"
    acks = custody(cfg.data_dir, "clip_synced")
    deleted = custody(cfg.data_dir, "recorder_clip_deleted")
    assert sorted(acks) == sorted(deleted) == sorted(held), "every clip acked, then freed"
    assert {e["ack"] for e in acks.values()} == {"receipt"}, "central's receipt proved each ack"
    assert all(acks[c]["seq"] < deleted[c]["seq"] for c in acks), "freed only after its ack"
    result = receive_verify(receiver_toml(tmp_path, broker))
    assert result.returncode == 0, result.stdout
    assert f"{CLIPS} clips at central, {CLIPS} matched, 0 pending; OK" in result.stdout


class SilentOnOneFin(Receiver):
    """Never answers one clip's fin (central stuck on it); answers everything else."""

    target = ""
    fins_unanswered = 0

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        parts = resp.topic.split("/")
        if len(parts) >= 3 and parts[1] == self.target and parts[2] == "fin":
            self.fins_unanswered += 1
            return
        super().send_response(topic, correlation, resp)


def test_a_clip_whose_fin_goes_unanswered_holds_only_its_own_lane(
    tmp_path: Path, broker: Broker
) -> None:
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    enroll(cfg, tmp_path / "dock-keys")
    originals = simkit.build(tmp_path / "bay1", docking(6))
    stuck = originals[0]  # the first in send order: it takes the first lane
    SilentOnOneFin.target = sha(stuck)
    rx = start_receiver(tmp_path, broker, SilentOnOneFin)
    assert isinstance(rx, SilentOnOneFin)
    others = originals[1:]
    expected = sorted(sha(o) for o in others)
    try:
        with running(cfg, sync_backoff=Backoff(600, 600)) as (daemon, _views):
            wait_for(lambda: rx.fins_unanswered >= 1, 60, "the stuck clip's fin")
            wait_for(lambda: not any(o.exists() for o in others), 60, "the others freed")
            assert rx.fins_unanswered >= 1 and daemon.parts.sync.busy  # type: ignore[union-attr]
            assert daemon.parts.sync.healthy(5.0), "a lane waiting on its fin is alive"  # type: ignore[union-attr]
            stopping = time.monotonic()
            daemon.stop()  # the stuck lane ends on the stop, not on the fin timeout (330 s)
            assert time.monotonic() - stopping < 15
    finally:
        rx.stop()
    assert stuck.exists(), "the clip central never acked stays on the recorder"
    acks = custody(cfg.data_dir, "clip_synced")
    assert sorted(acks) == expected, "no ack mistaken for the stuck clip"


def test_the_window_is_shared_fairly_and_a_send_holding_none_goes_first() -> None:
    assert [share(32, n) for n in (0, 1, 2, 3, 6, 40)] == [32, 32, 16, 11, 6, 1]
    window = Window()
    window.join()
    assert all(window.take(4, held) for held in range(4)), "one send alone takes the window"
    assert not window.take(4, 4), "never beyond the limit"
    window.join()  # a second send: the first may hold 2 from now on
    got = threading.Event()
    waiter = threading.Thread(target=lambda: got.set() if window.take(4, 0, 10) else None)
    waiter.start()
    wait_for(lambda: window.waiting == 1, 5, "the second send waiting for a slot")
    window.give()  # the first send's answer: the slot goes to the one holding none
    waiter.join(5)
    assert got.is_set() and window.used == 4
    window.give(2)
    assert not window.take(4, 2), "the first send is at its share (2 of 4) now"
    assert window.take(4, 1), "the second send is below its share"
    window.leave()
    window.give(4)
    assert window.used == 0


class Ordered(Receiver):
    """Answers as the receiver does, and keeps the order of its answers: (command, file id)."""

    answered: list[tuple[str, str]] = []

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        parts = resp.topic.split("/")
        if len(parts) >= 3 and parts[2] in ("init", "fin"):
            self.answered.append((parts[2], parts[1]))
        super().send_response(topic, correlation, resp)


def test_a_clips_manifest_goes_while_the_clip_does(tmp_path: Path, broker: Broker) -> None:
    """agent/sync/delivery.py: a manifest sent after its clip's fin idled the link for its three
    round trips at the end of every docking; it goes beside the clip, after the chain. Through
    a link with a 200 ms round trip, so the order does not hang on how threads are scheduled."""
    proxy = LinkProxy((broker.host, broker.port), 5_000_000, RTT)
    cfg = dock_config(tmp_path, mqtt={"host": "127.0.0.1", "port": proxy.port})
    enroll(cfg, tmp_path / "dock-keys")
    originals = simkit.build(tmp_path / "bay1", docking(3))
    expected = sorted(sha(o) for o in originals)
    Ordered.answered = []
    rx = start_receiver(tmp_path, broker, Ordered)
    try:
        with running(cfg) as (_daemon, _views):
            wait_for(lambda: not any(o.exists() for o in originals), 60, "every clip freed")
    finally:
        rx.stop()
        proxy.close()
    order = Ordered.answered
    central = tmp_path / "central" / "dock-test"
    manifests = {}  # clip sha -> its manifest transfer's file id
    for held in central.glob("*/manifest.json"):
        user_data = json.loads(held.read_text())
        if user_data.get("kind") == "manifest":
            manifests[user_data["clip_sha256"]] = held.parent.name
    assert sorted(manifests) == expected
    clips_and_manifests = {*manifests, *manifests.values()}
    chunk_fin = min(i for i, (c, f) in enumerate(order) if f not in clips_and_manifests)
    for clip, manifest in manifests.items():
        manifest_init = order.index(("init", manifest))
        assert manifest_init < order.index(("fin", clip)), f"{clip[:12]}: manifest after its fin"
        assert chunk_fin < min(manifest_init, order.index(("init", clip))), "chain goes first"
