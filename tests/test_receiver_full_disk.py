"""The receiver's disk fills up: a real small tmpfs under the store, real Mosquitto and clients.

Nothing is reported complete unless every byte is durable and verified, the error is logged
once and reaches the sender as the fin's (or the segment's) reason, and the same file goes
through, reusing what the failed attempt left, once space is freed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.sync.queue import Backoff
from agent.transfer import protocol as p
from agent.transfer.receiver.partials import TransferStore
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import FileSender, QuotaExceeded, SendSettings
from firmware_interface import simkit
from tests.broker import Broker, mosquitto_binary
from tests.dock import dock_config, running, wait_for
from tests.transfer_kit import RawSender, close, dock_connection, files_under, random_file

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker, receiver, dock


def tmpfs_skip_reason() -> str | None:
    """Why the tests on a small real tmpfs cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs under the store needs root"
    if mosquitto_binary() is None:
        return "mosquitto is not installed"
    return None


needs_tmpfs = pytest.mark.skipif(tmpfs_skip_reason() is not None, reason=str(tmpfs_skip_reason()))

KIB, MIB = 1 << 10, 1 << 20
SEG = 256 * KIB
DISK = 4 * MIB
CLIP = 3 * MIB


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """The receiver's store on a 4 MiB tmpfs of its own, unmounted afterwards."""
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(store)], check=True)
    try:
        yield store
    finally:
        if subprocess.run(["umount", str(store)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(store)], check=True)
            pytest.fail("the store was still busy after the receiver stopped (files left open)")


class Counting:
    """A Transport wrapper that counts segment publishes (resends included) and fins."""

    def __init__(self, link: Any) -> None:
        self.link, self.segments, self.fins = link, 0, 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, properties: Any = None) -> Any:
        parts = topic.split("/")  # {prefix}/{file_id}/{offset}/{sha}, {prefix}/{file_id}/fin/..
        self.segments += len(parts) == 4
        self.fins += len(parts) == 5 and parts[2] == "fin"
        return self.link.publish(topic, payload, qos=qos, properties=properties)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> Any:
        return self.link.subscribe(topic_filter, qos, handler)

    def wait_connected(self, timeout: float) -> bool:
        return bool(self.link.wait_connected(timeout))


def fill(store: Path, leave: int) -> Path:
    """A filler file that leaves `leave` bytes free on the store's filesystem."""
    st = os.statvfs(store)
    filler = store / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def no_space_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ERROR lines about a full disk."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and "no space" in r.getMessage()
    ]


def send_segments(dock: RawSender, fid: str, data: bytes) -> list[p.Response]:
    """Every segment once, in order; their answers."""
    answers = [dock.segment(fid, off, data[off : off + SEG]) for off in range(0, len(data), SEG)]
    assert all(a is not None for a in answers), "every segment is answered"
    return answers


def no_room(resp: p.Response | None) -> bool:
    return (
        resp is not None
        and resp.reason_code == p.QUOTA_EXCEEDED
        and resp.reason_description == "receiver: no space left (ENOSPC)"
    )


@needs_tmpfs
def test_clip_larger_than_free_space_is_never_reported_complete(
    dock: RawSender, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = fill(store, 2 * MIB)
    data = os.urandom(CLIP)
    fid = p.sha256_hex(data)
    held = store / "raw-dock" / fid
    assert dock.init(fid, "clip.MP4", CLIP, {"sha256": fid}).ok  # type: ignore[union-attr]
    answers = send_segments(dock, fid, data)
    assert all(a.ok or no_room(a) for a in answers), "answered ok before the write, or no room"
    fin = dock.fin(fid, CLIP)
    assert no_room(fin), fin
    assert not (held / "manifest.json").exists() and not (held / "clip.MP4").exists()
    errors = no_space_errors(caplog)
    assert len(errors) == 1 and "clip.MP4" in errors[0] and fid in errors[0], errors
    assert not [r for r in caplog.records if r.exc_info], "no traceback"

    filler.unlink()
    caplog.clear()
    assert dock.init(fid, "clip.MP4", CLIP, {"sha256": fid}).ok  # type: ignore[union-attr]
    assert all(a.ok for a in send_segments(dock, fid, data))
    assert dock.fin(fid, CLIP).ok  # type: ignore[union-attr]
    assert hashlib.sha256((held / "clip.MP4").read_bytes()).hexdigest() == fid
    assert files_under(store) == [f"raw-dock/{fid}/clip.MP4", f"raw-dock/{fid}/manifest.json"]
    assert not no_space_errors(caplog)


@needs_tmpfs
def test_manifest_that_does_not_fit_leaves_nothing_in_place_and_the_data_is_reused(
    dock: RawSender, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(CLIP)
    fid = p.sha256_hex(data)
    notes = {"sha256": fid, "notes": ["n" * 1000] * 256}  # a manifest of ~256 KiB
    meta_bytes = len(json.dumps(notes)) + 4 * KIB
    # Room for the data, init.json (which holds the notes too) and coverage.json, not the manifest.
    filler = fill(store, CLIP + meta_bytes + 4 * KIB + 64 * KIB)
    held = store / "raw-dock" / fid
    assert dock.init(fid, "clip.MP4", CLIP, notes).ok  # type: ignore[union-attr]
    assert all(a.ok for a in send_segments(dock, fid, data)), "the data fits"
    fin = dock.fin(fid, CLIP)
    assert no_room(fin), fin
    assert not (held / "manifest.json").exists() and not (held / "clip.MP4").exists()
    assert (held / ".partial" / "data").stat().st_size == CLIP, "the verified data is kept"
    assert len(no_space_errors(caplog)) == 1

    filler.unlink()
    resp = dock.fin(fid, CLIP)
    assert resp is not None and resp.ok, "fin alone completes it: nothing is sent again"
    assert hashlib.sha256((held / "clip.MP4").read_bytes()).hexdigest() == fid
    assert json.loads((held / "manifest.json").read_text()) == notes
    assert files_under(store) == [f"raw-dock/{fid}/clip.MP4", f"raw-dock/{fid}/manifest.json"]


@needs_tmpfs
def test_sender_fails_once_with_the_receivers_reason_then_the_same_send_succeeds(
    broker: Broker,
    receiver: Receiver,
    store: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    filler = fill(store, 2 * MIB)
    client = link = dock_connection(broker, "dock-01")
    counting = Counting(link)
    settings = SendSettings(segment_bytes=SEG, max_inflight=4, ack_timeout_s=2.0, max_rounds=3)
    sender = FileSender(counting, "dock-01", tmp_path / "state", settings)
    src = tmp_path / "clip.MP4"
    fid = random_file(src, CLIP)
    held = store / "dock-01" / fid
    try:
        with pytest.raises(QuotaExceeded, match=r"reason code 151: receiver: no space left"):
            sender.send(src, fid, "clip.MP4", CLIP, {"sha256": fid})
        assert counting.segments <= CLIP // SEG + settings.max_inflight, "no second full pass"
        assert counting.fins <= 1
        assert not (held / "manifest.json").exists() and not (held / "clip.MP4").exists()
        assert len(no_space_errors(caplog)) == 1

        filler.unlink()
        result = sender.send(src, fid, "clip.MP4", CLIP, {"sha256": fid})
        assert result.rounds == 1 and result.skipped == 0, "everything sent again, in one round"
        assert hashlib.sha256((held / "clip.MP4").read_bytes()).hexdigest() == fid
        assert files_under(store) == [f"dock-01/{fid}/clip.MP4", f"dock-01/{fid}/manifest.json"]
        assert list((tmp_path / "state").glob("*.json")) == []
    finally:
        close(client)


@needs_tmpfs
def test_dock_keeps_clips_unsynced_and_on_the_recorder_while_the_receiver_is_full(
    broker: Broker,
    receiver: Receiver,
    store: Path,
    tmp_path: Path,
) -> None:
    filler = fill(store, 0)
    cfg = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    assert cfg.policy.delete_from_recorder == "after_upstream_ack"
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    with running(cfg, sync_backoff=Backoff(1.0)) as (daemon, views):
        index = daemon.services.index

        def failed() -> list[str]:
            """The clips' sync_failed alerts (the custody log's chunks pause on their own)."""
            return [
                a.message
                for a in views.alerts
                if a.code == "sync_failed" and a.fields.get("kind") != "custody"
            ]

        wait_for(lambda: len(failed()) >= 3, 60, "sync_failed alerts")
        assert all("receiver: no space left" in m for m in failed()), failed()
        assert all("central has no room" in m for m in failed())
        # The whole queue waits, doubling: one alert per pause, not one per clip per try.
        pauses = [m.rsplit("sync paused ", 1)[1] for m in failed()[:3]]
        assert pauses == ["1 s", "2 s", "4 s"], failed()
        assert {r["state"] for r in index.iter_all()} == {"offloaded"}
        assert all(p.exists() for p in originals), "nothing leaves the recorder without an ack"
        assert not list(store.glob("*/*/manifest.json"))

        filler.unlink()
        wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
        wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
        for r in index.iter_all():
            held = store / cfg.client_id / r["sha256"] / r["file_name"]
            assert hashlib.sha256(held.read_bytes()).hexdigest() == r["sha256"]


def write(store: TransferStore, fid: str, data: bytes, offsets: range) -> None:
    """Segments of `data` at `offsets`, straight into a store."""
    for off in offsets:
        chunk = data[off : off + SEG]
        store.write_segment("dock", p.Segment(fid, off, p.sha256_hex(chunk)), chunk)


def test_failed_fsync_forgets_what_was_not_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(4 * SEG)
    fid = p.sha256_hex(data)
    init = p.Init(fid, p.FileMeta("clip.MP4", len(data), fid))
    store = TransferStore(tmp_path)
    store.begin("dock", init)
    write(store, fid, data, range(0, 2 * SEG, SEG))
    store.commit()

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing)
        write(store, fid, data, range(2 * SEG, 4 * SEG, SEG))
        store.commit()  # remembered for the fin, not raised
    with pytest.raises(p.ProtocolError, match="receiver: could not write") as exc:
        store.finish("dock", p.Fin(fid, len(data), fid))
    assert exc.value.reason_code == p.UNSPECIFIED_ERROR
    assert not (tmp_path / "dock" / fid / "clip.MP4").exists()
    coverage = json.loads((tmp_path / "dock" / fid / ".partial" / "coverage.json").read_text())
    assert coverage == [[0, 2 * SEG]], "only what an fsync made durable counts"
    store.begin("dock", init)
    write(store, fid, data, range(0, len(data), SEG))
    store.finish("dock", p.Fin(fid, len(data), fid))
    store.close()
    assert (tmp_path / "dock" / fid / "clip.MP4").read_bytes() == data
