"""Abandoned partial transfers expire: the pure decision, a real store, and a real Mosquitto."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.schema import ConfigError
from agent.transfer import protocol as p
from agent.transfer.receiver.config import parse_receiver_config
from agent.transfer.receiver.expiry import MIN_PARTIAL_TTL_S, PartialEntry, stale_partials
from agent.transfer.receiver.partials import PARTIAL_DIR, TransferStore
from agent.transfer.sender import FileSender, SendSettings, TransferInterrupted
from tests.broker import Broker
from tests.transfer_kit import (
    close,
    dock_connection,
    files_under,
    random_file,
    start_receiver,
)

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker, receiver, dock

DAY = 86400.0
NOW = 1_000 * DAY
TTL = 7 * DAY
CLIENT = "dock-01"


def entry(age: float, **kw: Any) -> PartialEntry:
    fields: dict[str, Any] = {"client_id": CLIENT, "file_id": "f" * 64, "size": 10}
    return PartialEntry(last_activity=NOW - age, **(fields | kw))


# --- the pure decision ---------------------------------------------------------------------------


def test_only_partials_idle_beyond_the_ttl_are_stale() -> None:
    old, fresh, edge = entry(TTL + 1), entry(TTL - 1), entry(TTL)
    assert stale_partials([old, fresh, edge], NOW, TTL) == [old]
    assert stale_partials([], NOW, TTL) == []


def test_an_open_partial_is_never_stale() -> None:
    assert stale_partials([entry(100 * TTL, open=True)], NOW, TTL) == []


def test_segments_ttl_shortens_the_ttl_within_bounds() -> None:
    short = entry(2 * DAY, segments_ttl=int(DAY))
    assert stale_partials([short], NOW, TTL) == [short], "the sender asked for one day"
    longer = entry(8 * DAY, segments_ttl=int(30 * DAY))
    assert stale_partials([longer], NOW, TTL) == [longer], "never longer than the receiver's TTL"
    tiny = entry(MIN_PARTIAL_TTL_S - 1, segments_ttl=0)
    assert stale_partials([tiny], NOW, TTL) == [], f"never shorter than {MIN_PARTIAL_TTL_S} s"


def test_partial_ttl_s_config() -> None:
    base = {"store_dir": "/srv/evidence"}
    assert parse_receiver_config({"receiver": base}).receiver.partial_ttl_s == 7 * 86400
    cfg = parse_receiver_config({"receiver": base | {"partial_ttl_s": 3600}})
    assert cfg.receiver.partial_ttl_s == 3600
    for bad, why in ((10, "expected a number >= 60"), ("1d", "expected an integer")):
        with pytest.raises(ConfigError) as exc:
            parse_receiver_config({"receiver": base | {"partial_ttl_s": bad}})
        assert exc.value.problems == [f"receiver.partial_ttl_s = {bad!r}: {why}"]


# --- a real store --------------------------------------------------------------------------------


def start(store: TransferStore, data: bytes, upto: int, name: str = "clip.MP4") -> str:
    """init a file of `data` and store its first `upto` bytes; returns its id."""
    fid = p.sha256_hex(data)
    store.begin(CLIENT, p.Init(fid, p.FileMeta(name, len(data), fid, user_data={"sha256": fid})))
    if upto:
        chunk = data[:upto]
        store.write_segment(CLIENT, p.Segment(fid, 0, p.sha256_hex(chunk)), chunk)
    store.commit()
    return fid


def age(path: Path, seconds: float) -> None:
    """Set the mtime of `path` and everything under it `seconds` back."""
    when = time.time() - seconds
    for f in [path, *path.rglob("*")]:
        os.utime(f, (when, when))


def everything(_file_id: str) -> bool:
    return True


def test_old_partial_removed_fresh_partial_and_old_complete_file_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    store = TransferStore(root)
    old_data, fresh_data, done_data = os.urandom(5000), os.urandom(5000), os.urandom(3000)
    old, fresh = start(store, old_data, 4096), start(store, fresh_data, 4096)
    done = start(store, done_data, len(done_data))
    store.finish(CLIENT, p.Fin(done, len(done_data), done))
    store.close()  # a restarted receiver: nothing open
    age(root / CLIENT / old, 8 * DAY)
    age(root / CLIENT / done, 30 * DAY)
    before = files_under(root)

    store = TransferStore(root)
    with caplog.at_level(logging.INFO, logger="agent.transfer.receiver"):
        removed = store.expire_partials(TTL, everything)
    assert [(e.client_id, e.file_id) for e in removed] == [(CLIENT, old)]
    assert not (root / CLIENT / old).exists(), "the emptied file directory goes too"
    assert files_under(root) == [f for f in before if f"/{old}/" not in f]
    assert (root / CLIENT / done / "clip.MP4").read_bytes() == done_data
    assert (root / CLIENT / fresh / PARTIAL_DIR / "data").is_file()
    lines = [r.getMessage() for r in caplog.records if "expired partial" in r.getMessage()]
    assert len(lines) == 1 and f"{CLIENT}/{old}" in lines[0] and "idle 691200 s" in lines[0]
    assert f"{removed[0].size} bytes" in lines[0] and removed[0].size >= 4096
    assert store.expire_partials(TTL, everything) == [], "nothing more to do"
    store.close()


def test_only_owned_files_are_looked_at(tmp_path: Path) -> None:
    store = TransferStore(tmp_path)
    fid = start(store, os.urandom(100), 10)
    store.close()
    age(tmp_path / CLIENT / fid, 8 * DAY)
    assert store.expire_partials(TTL, lambda file_id: file_id != fid) == []
    assert store.expire_partials(TTL, everything)[0].file_id == fid


def test_open_partial_kept_while_active_closed_and_removed_once_idle(tmp_path: Path) -> None:
    store = TransferStore(tmp_path)
    data = os.urandom(8192)
    fid = start(store, data, 4096)
    assert store.expire_partials(TTL, everything) == [], "open and just written"
    assert store.declared_size(CLIENT, fid) == len(data)
    age(tmp_path / CLIENT / fid, 8 * DAY)
    assert [e.file_id for e in store.expire_partials(TTL, everything)] == [fid]
    assert store.declared_size(CLIENT, fid) is None, "closed before it was removed"
    resumed = start(store, data, 0)  # the sender comes back: a fresh partial
    with pytest.raises(p.ProtocolError, match="8192 bytes not received"):
        store.finish(CLIENT, p.Fin(resumed, len(data), resumed))
    store.close()


# --- end to end through a real Mosquitto ---------------------------------------------------------

SEG = 65536
FAST = SendSettings(
    segment_bytes=SEG, max_inflight=4, ack_timeout_s=2.0, fin_timeout_s=5.0, persist_interval_s=0
)


class CancelAfter:
    """A Transport wrapper that sets `cancel` once `count` segments were published."""

    def __init__(self, link: Any, count: int, cancel: threading.Event) -> None:
        self.link, self.left, self.cancel = link, count, cancel

    def publish(self, topic: str, payload: bytes, qos: int = 1, properties: Any = None) -> Any:
        if len(topic.split("/")) == 4:
            self.left -= 1
            if self.left <= 0:
                self.cancel.set()
        return self.link.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> Any:
        return self.link.subscribe(topic_filter, qos, handler)

    def wait_connected(self, timeout: float) -> bool:
        return bool(self.link.wait_connected(timeout))


def wait_gone(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def test_sender_resuming_an_expired_partial_still_completes(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 16 * SEG + 123)
    size = src.stat().st_size
    rx = start_receiver(broker, store, partial_ttl_s=3600)
    client = link = dock_connection(broker, CLIENT)
    try:
        cancel = threading.Event()
        sender = FileSender(CancelAfter(link, 8, cancel), CLIENT, state, FAST)
        with pytest.raises(TransferInterrupted):
            sender.send(src, fid, "clip.MP4", size, {"sha256": fid}, cancel=cancel)
        rx.stop()
        partial = store / CLIENT / fid / PARTIAL_DIR
        assert (partial / "data").is_file(), "the receiver kept the partial"
        assert any(state.glob("*.json")), "the sender kept the acknowledged offsets"
        age(store / CLIENT / fid, 2 * 3600)

        with caplog.at_level(logging.INFO, logger="agent.transfer.receiver"):
            rx = start_receiver(broker, store, partial_ttl_s=3600)
            assert wait_gone(partial, 10), "expired at start-up"
            logged = f"expired partial transfer {CLIENT}/{fid}"
            deadline = time.monotonic() + 10  # logged just after the removal, in its thread
            while not any(logged in m for m in caplog.messages) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert any(logged in m for m in caplog.messages)

        result = FileSender(link, CLIENT, state, FAST).send(src, fid, "clip.MP4", size, {})
        assert result.skipped > 0 and result.rounds == 2, "resumed, fin failed, resent all"
        held = store / CLIENT / fid / "clip.MP4"
        assert hashlib.sha256(held.read_bytes()).hexdigest() == fid
        assert files_under(store) == [f"{CLIENT}/{fid}/clip.MP4", f"{CLIENT}/{fid}/manifest.json"]
    finally:
        close(client)
        rx.stop()
