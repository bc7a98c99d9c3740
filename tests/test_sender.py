"""The dock's sender end to end through a real Mosquitto to the reference receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import (
    FileSender,
    SendSettings,
    TransferFailed,
    TransferInterrupted,
)
from tests.broker import Broker, running_broker
from tests.mqtt_helpers import wait_for
from tests.transfer_kit import close, dock_connection, random_file, start_receiver

REPO = Path(__file__).resolve().parents[1]
FAST = SendSettings(
    segment_bytes=65536,
    max_inflight=8,
    ack_timeout_s=1.0,
    fin_timeout_s=5.0,
    reconnect_wait_s=20.0,
    persist_interval_s=0.05,
)

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker, receiver, dock


def held(store: Path, file_id: str, name: str = "clip.MP4") -> Path:
    return store / "dock-01" / file_id / name


class DropEveryNth(Receiver):
    """A receiver that silently loses every Nth answer (as a flaky network would)."""

    every = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0
        self.dropped = 0

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.dropped += 1
            return
        super().send_response(topic, correlation, resp)


class CorruptOnce:
    """A Transport wrapper that flips one byte of the first publish of one segment offset."""

    def __init__(self, link: Any, offset: int) -> None:
        self.link, self.offset, self.done = link, offset, False

    def publish(self, topic: str, payload: bytes, qos: int = 1, properties: Any = None) -> Any:
        parts = topic.split("/")
        if not self.done and len(parts) == 4 and parts[2] == str(self.offset):
            self.done = True
            payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
        return self.link.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> Any:
        return self.link.subscribe(topic_filter, qos, handler)

    def wait_connected(self, timeout: float) -> bool:
        return bool(self.link.wait_connected(timeout))


@pytest.fixture
def setup(broker: Broker, tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """(store, make_sender) with a receiver running; senders are closed afterwards."""
    rx = start_receiver(broker, tmp_path / "store")
    clients: list[Any] = []

    def make_sender(settings: SendSettings = FAST, wrap: Any = None) -> FileSender:
        client = link = dock_connection(broker, "dock-01")
        clients.append(client)
        transport = wrap(link) if wrap else link
        return FileSender(transport, "dock-01", tmp_path / "state", settings)

    yield tmp_path / "store", make_sender
    for c in clients:
        close(c)
    rx.stop()


def test_files_arrive_identical_with_manifest(setup: Any, tmp_path: Path) -> None:
    store, make_sender = setup
    sender = make_sender()
    for i, size in enumerate((0, 1, 65536, 300_001)):
        src = tmp_path / f"clip{i}.MP4"
        fid = random_file(src, size)
        manifest = {"sha256": fid, "size": size, "notes": ["n"], "device_id": "ZFY0012345"}
        result = sender.send(src, fid, "clip.MP4", size, manifest)
        assert result.segments_sent == -(-size // 65536) and result.resends == 0
        assert held(store, fid).read_bytes() == src.read_bytes()
        assert json.loads(held(store, fid, "manifest.json").read_text()) == manifest
    assert list((tmp_path / "state").glob("*.json")) == [], "finished: no offsets kept"
    assert len(list((tmp_path / "state" / "done").glob("*.json"))) == 4, "only each init"
    again = sender.send(src, fid, "clip.MP4", 300_001, {"other": "user_data"})
    assert again.rounds == 1, "sending the same clip twice is idempotent: the first init again"
    assert json.loads(held(store, fid, "manifest.json").read_text()) == manifest


def _kill_script(port: int, src: Path, fid: str, state: Path) -> str:
    size = src.stat().st_size
    return "\n".join(
        [
            f"import sys; sys.path.insert(0, {str(REPO)!r})",
            "from pathlib import Path",
            "from agent.transfer.sender import FileSender, SendSettings",
            "from tests.broker import Broker",
            "from tests.transfer_kit import dock_connection",
            f"link = dock_connection(Broker(port={port}, workdir=Path('.')), 'dock-01')",
            "s = SendSettings(segment_bytes=65536, rate_limit_bytes_per_s=1 << 20,"
            " persist_interval_s=0.05)",
            f"FileSender(link, 'dock-01', Path({str(state)!r}), s)"
            f".send(Path({str(src)!r}), {fid!r}, 'clip.MP4', {size}, {{}})",
        ]
    )


def test_resume_after_the_sender_is_killed(setup: Any, broker: Broker, tmp_path: Path) -> None:
    store, make_sender = setup
    src = tmp_path / "big.MP4"
    fid = random_file(src, 64 * 65536)
    code = _kill_script(broker.port, src, fid, tmp_path / "state")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.monotonic() + 20
    acked: list[int] = []
    while time.monotonic() < deadline and len(acked) < 16:
        time.sleep(0.05)
        for f in (tmp_path / "state").glob("*.json"):
            acked = json.loads(f.read_text() or "{}").get("acked", [])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(acked) >= 16, "the killed sender had persisted acknowledged offsets"
    result = make_sender().send(src, fid, "clip.MP4", src.stat().st_size, {})
    assert result.segments_sent <= 64 - len(acked) and result.skipped >= len(acked)
    assert held(store, fid).read_bytes() == src.read_bytes()


class CountingSegments:
    """A Transport wrapper that counts the segments published (where a send stands)."""

    def __init__(self, link: Any) -> None:
        self.link, self.segments = link, 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, properties: Any = None) -> Any:
        self.segments += len(topic.split("/")) == 4  # $file/{file id}/{offset}/{checksum}
        return self.link.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> Any:
        return self.link.subscribe(topic_filter, qos, handler)

    def wait_connected(self, timeout: float) -> bool:
        return bool(self.link.wait_connected(timeout))


def test_broker_outage_mid_transfer(tmp_path: Path) -> None:
    with running_broker(tmp_path / "broker") as own:
        rx = start_receiver(own, tmp_path / "store")
        client = link = dock_connection(own, "dock-01")
        settings = SendSettings(
            segment_bytes=65536,
            rate_limit_bytes_per_s=2 << 20,  # 48 segments in about 1.5 s
            ack_timeout_s=1.0,
            reconnect_wait_s=30.0,
        )
        counting = CountingSegments(link)
        sender = FileSender(counting, "dock-01", tmp_path / "state", settings)
        src = tmp_path / "clip.MP4"
        fid = random_file(src, 3 << 20)
        box: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: box.update(r=sender.send(src, fid, "clip.MP4", 3 << 20, {"k": 1}))
        )
        worker.start()
        wait_for(lambda: counting.segments >= 4, 10, "the first segments to go out")
        own.stop(kill=True)
        at_cut = counting.segments
        assert "r" not in box and at_cut < 48, "the broker went down mid-send"
        wait_for(lambda: not link.wait_connected(0), 10, "the outage noticed by the dock's link")
        own.start()
        worker.join(60)
        try:
            assert "r" in box, "the send finished after the broker came back"
            assert box["r"].segments_sent > at_cut, "segments went out after the outage"
            assert held(tmp_path / "store", fid).read_bytes() == src.read_bytes()
        finally:
            close(client)
            rx.stop()


def test_lost_answers_are_resent(broker: Broker, tmp_path: Path) -> None:
    rx = start_receiver(broker, tmp_path / "store", DropEveryNth)
    client = link = dock_connection(broker, "dock-01")
    try:
        src = tmp_path / "clip.MP4"
        fid = random_file(src, 40 * 65536)
        result = FileSender(link, "dock-01", tmp_path / "state", FAST).send(
            src, fid, "clip.MP4", 40 * 65536, {}
        )
        assert isinstance(rx, DropEveryNth) and rx.dropped > 0 and result.resends > 0
        assert held(tmp_path / "store", fid).read_bytes() == src.read_bytes()
    finally:
        close(client)
        rx.stop()


def test_corrupt_segment_is_refused_and_resent(setup: Any, tmp_path: Path) -> None:
    store, make_sender = setup
    sender = make_sender(wrap=lambda link: CorruptOnce(link, 3 * 65536))
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 8 * 65536)
    result = sender.send(src, fid, "clip.MP4", 8 * 65536, {})
    assert result.resends == 1 and result.segments_sent == 9
    assert held(store, fid).read_bytes() == src.read_bytes()


def test_local_copy_not_matching_its_id_fails(setup: Any, tmp_path: Path) -> None:
    store, make_sender = setup
    sender = make_sender(SendSettings(segment_bytes=65536, ack_timeout_s=1.0, max_rounds=2))
    src = tmp_path / "clip.MP4"
    random_file(src, 3 * 65536)
    wrong_id = p.sha256_hex(b"the clip as it was hashed at offload")
    with pytest.raises(TransferFailed, match="fin failed after 2 rounds: .*checksum mismatch"):
        sender.send(src, wrong_id, "clip.MP4", 3 * 65536, {})
    assert not held(store, wrong_id).exists()


def test_cancel_stops_early_and_rate_limit_holds(setup: Any, tmp_path: Path) -> None:
    _store, make_sender = setup
    sender = make_sender(SendSettings(segment_bytes=65536, rate_limit_bytes_per_s=512 * 1024))
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 2 << 20)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(TransferInterrupted):
        sender.send(src, fid, "clip.MP4", 2 << 20, {}, cancel=cancel)
    assert 0.9 < time.monotonic() - started < 3.0
    state = json.loads(next((tmp_path / "state").glob("*.json")).read_text())
    assert 1 <= len(state["acked"]) <= 20, "at most ~1 s at 512 KiB/s plus a 512 KiB burst"
