"""Dock core end to end: simulated recorders with real clips, the daemon in-process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pytest

from agent.dock.clock import ClockSource
from agent.evidence.custody import iter_entries, verify_chain
from firmware_interface import simkit
from firmware_interface.base import ClipEntry
from firmware_interface.discovery import BayWaiting, Docked, Undocked
from firmware_interface.simulated import SimulatedRecorder
from tests.dock import dock_config, running, settled, wait_for
from tests.fakes import flip_byte


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def custody(cfg_data: Path, event: str) -> list[dict]:
    return [e for e in iter_entries(cfg_data / "custody.jsonl") if e["event"] == event]


def shift_recorder(**kw: object) -> simkit.SimRecorder:
    now = datetime.now()
    clips = simkit.shift(now - timedelta(hours=2), [2, 2, 1]) + [
        simkit.SimClip(now - timedelta(hours=1), 1, "JPG"),
        simkit.SimClip(now - timedelta(minutes=50), 1, "WAV"),
    ]
    return simkit.SimRecorder(clips=clips, **kw)  # type: ignore[arg-type]


def test_every_clip_offloaded_bit_for_bit_with_custody(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    rec = shift_recorder()
    originals = simkit.build(tmp_path / "bay1", rec, docked=False)
    with running(cfg) as (daemon, views):
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        records = {r["file_name"]: r for r in daemon.services.index.iter_all()}
    assert sorted(records) == sorted(p.name for p in originals)
    for original in originals:
        r = records[original.name]
        stored = Path(r["local_path"])
        assert stored.read_bytes() == original.read_bytes()
        assert r["sha256"] == sha(original) == r["clip_id"]
        assert stored.parent.parent.name == rec.device_id
        assert r["officer_id"] == "012345" and r["department"] == "水政监察大队"
        assert original.exists(), "default policy keeps recorder files until upstream ack"
    offloaded = custody(cfg.data_dir, "clip_offloaded")
    assert sorted(e["sha256"] for e in offloaded) == sorted(sha(p) for p in originals)
    assert len(custody(cfg.data_dir, "clip_verified")) == len(originals)
    assert verify_chain(cfg.data_dir / "custody.jsonl") == []
    media = {r["file_name"]: r["media_type"] for r in records.values()}
    assert sorted(media.values()) == ["audio", "photo", "video", "video", "video"]


def test_bay_goes_offloading_then_waits_for_ack_and_charge(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    rec = shift_recorder(battery_pct=40)
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        view = views.latest(1)
    assert views.states(1)[:4] == ["empty", "identifying", "validating", "offloading"]
    assert view is not None and view.state == "charging"
    codes = {f.code for f in view.findings}
    assert {"battery_charging", "awaiting_ack"} <= codes
    assert view.progress.clips_done == view.progress.clips_total == 5


def test_clock_drift_of_47s_measured_corrected_and_logged(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    rec = shift_recorder(clock_offset_s=47.0)
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        records = list(daemon.services.index.iter_all())
    checked = custody(cfg.data_dir, "clock_checked")
    assert len(checked) == 1 and abs(checked[0]["offset_s"] - 47.0) < 1.0
    assert len(custody(cfg.data_dir, "clock_set")) == 1
    rj = json.loads((tmp_path / "bay1" / "recorder.json").read_text())
    assert rj["clock_offset_s"] == 0.0, "the recorder's clock was set"
    log = (tmp_path / "bay1" / "LOG" / "events.jsonl").read_text()
    assert '"clock_set"' in log
    first = min(records, key=lambda r: r["file_name"])
    named = datetime.strptime(first["file_name"].split("_")[2], "%Y%m%d%H%M%S")
    true_start = datetime.fromisoformat(first["recorded_start"]).replace(tzinfo=None)
    assert abs((named - true_start).total_seconds() - 47.0) < 1.0
    assert all(abs(r["clock_offset_s"] - 47.0) < 1.0 for r in records)


def test_clock_corrected_when_timesyncd_says_synchronised(tmp_path: Path) -> None:
    flag = tmp_path / "run" / "timesync" / "synchronized"
    flag.parent.mkdir(parents=True)
    flag.touch()  # what systemd-timesyncd does on each successful synchronisation
    cfg = dock_config(tmp_path, require_synced_clock=True, clock_sync_source="timesyncd")
    rec = shift_recorder(clock_offset_s=47.0)
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg, clock=ClockSource("timesyncd", flag=flag)) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        view = views.latest(1)
        assert daemon.parts is not None
        noted = [n for n in daemon.parts.notes.list(rec.device_id) if n.type == "clock_corrected"]
        assert len(noted) == 1, "analysis notes the corrected clock (it hears the bus's event)"
    assert len(custody(cfg.data_dir, "clock_set")) == 1
    assert json.loads((tmp_path / "bay1" / "recorder.json").read_text())["clock_offset_s"] == 0.0
    assert view is not None and "clock_corrected" in {f.code for f in view.findings}
    assert "clock_unsynced" not in {f.code for f in view.findings}


def test_clock_measured_but_not_set_when_dock_clock_unsynced(tmp_path: Path) -> None:
    flag = tmp_path / "run" / "timesync" / "synchronized"  # absent: never synchronised
    cfg = dock_config(tmp_path, require_synced_clock=True, clock_sync_source="timesyncd")
    rec = shift_recorder(clock_offset_s=47.0)
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg, clock=ClockSource("timesyncd", flag=flag)) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        view = views.latest(1)
        alerts = [a for a in views.alerts if a.code == "clock_unsynced"]
    assert custody(cfg.data_dir, "clock_set") == []
    assert abs(custody(cfg.data_dir, "clock_checked")[0]["offset_s"] - 47.0) < 1.0  # measured
    assert json.loads((tmp_path / "bay1" / "recorder.json").read_text())["clock_offset_s"] == 47.0
    assert view is not None and view.state == "fault"
    assert {"clock_unsynced", "clock_drift"} <= {f.code for f in view.findings}
    (unsynced,) = [f for f in view.findings if f.code == "clock_unsynced"]
    assert unsynced.detail["source"] == "timesyncd"
    assert f"{flag} is absent" in unsynced.message
    assert alerts and f"{flag} is absent" in alerts[0].message


def test_30_hour_old_clip_flagged_late_and_on_time_one_not(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    now = datetime.now()
    rec = simkit.SimRecorder(
        clips=[
            simkit.SimClip(now - timedelta(hours=30), 2),
            simkit.SimClip(now - timedelta(hours=1), 2),
        ]
    )
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        records = sorted(daemon.services.index.iter_all(), key=lambda r: r["file_name"])
        notes = daemon.parts.notes.list()
    old, recent = records
    assert "late_offload" in old["flags"] and "late_offload" not in recent["flags"]
    late_notes = [n for n in notes if n.type == "late_offload"]
    assert len(late_notes) == 1 and late_notes[0].clips == (old["sha256"],)


def test_after_local_verify_deletes_only_verified_clips_and_never_keeps(tmp_path: Path) -> None:
    for policy, expect_deleted in (("after_local_verify", True), ("never", False)):
        base = tmp_path / policy
        cfg = dock_config(base, delete_from_recorder=policy)
        rec = shift_recorder()
        originals = simkit.build(base / "bay1", rec)
        with running(cfg) as (daemon, views):
            wait_for(lambda d=daemon, v=views: settled(d, v, 1), 60, f"{policy} bay")
            records = list(daemon.services.index.iter_all())
        assert len(records) == len(originals)
        assert all(not p.exists() for p in originals) == expect_deleted
        assert all(p.exists() for p in originals) == (not expect_deleted)
        deleted = custody(cfg.data_dir, "recorder_clip_deleted")
        assert len(deleted) == (len(originals) if expect_deleted else 0)
        for r in records:
            assert sha(Path(r["local_path"])) == r["sha256"]


def test_redock_is_idempotent(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    rec = shift_recorder()
    originals = simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "first docking")
        simkit.undock(tmp_path / "bay1")
        wait_for(lambda: views.latest(1).state == "empty", 10, "undock")  # type: ignore[union-attr]
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: len(custody(cfg.data_dir, "docked")) == 2, 10, "second docking")
        wait_for(lambda: settled(daemon, views, 1), 60, "second docking to finish")
        records = list(daemon.services.index.iter_all())
    assert len(records) == len(originals)
    assert len(custody(cfg.data_dir, "clip_offloaded")) == len(originals)
    stored = [
        p
        for p in (cfg.data_dir / "evidence").rglob("*")
        if p.is_file() and ".incoming" not in p.parts and not p.name.endswith(".thumb.jpg")
    ]
    assert len(stored) == len(originals)


class SlowReader:
    """A recorder file that stalls until told to fail, like a USB stick pulled mid-copy."""

    def __init__(self, fh: BinaryIO, pulled: threading.Event, halfway: threading.Event) -> None:
        self.fh, self.pulled, self.halfway = fh, pulled, halfway

    def readinto(self, buf: bytearray) -> int:
        if self.fh.tell() > 0:
            self.halfway.set()
            if self.pulled.wait(10):
                raise OSError(5, "Input/output error")
        return self.fh.readinto(memoryview(buf)[:65536])  # type: ignore[attr-defined]

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(65536 if n < 0 else n)
        return bytes(buf[: self.readinto(buf)])

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> SlowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PullableRecorder(SimulatedRecorder):
    """The simulated driver whose files fail with EIO once the cable is pulled."""

    pulled = threading.Event()
    halfway = threading.Event()

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        return SlowReader(super().open_clip(clip), self.pulled, self.halfway)  # type: ignore[return-value]


def test_unplug_mid_copy_leaves_no_partial_clip_indexed(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    cfg_bay = tmp_path / "sim-unplug"
    rec = simkit.SimRecorder(clips=[simkit.SimClip(datetime.now() - timedelta(hours=1), 3)])
    originals = simkit.build(cfg_bay, rec)
    recorder = PullableRecorder(cfg_bay, ZoneInfo("UTC"))
    with running(cfg) as (daemon, views):
        daemon.dispatch(Docked(1, recorder, "simulated"))
        assert PullableRecorder.halfway.wait(20), "copy never started"
        PullableRecorder.pulled.set()
        daemon.dispatch(Undocked(1))
        wait_for(lambda: views.latest(1).state == "empty", 20, "bay to empty")  # type: ignore[union-attr]
        records = list(daemon.services.index.iter_all())
    assert records == []
    assert list((cfg.data_dir / "evidence" / ".incoming").iterdir()) == []
    assert custody(cfg.data_dir, "clip_offloaded") == []
    assert len(custody(cfg.data_dir, "undocked")) == 1
    assert all(p.exists() and p.stat().st_size > 0 for p in originals)


def test_tampered_stored_clip_makes_verify_fail_naming_it(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    rec = shift_recorder()
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        victim = next(r for r in daemon.services.index.iter_all() if r["media_type"] == "video")
    config_file = tmp_path / "dock.toml"
    config_file.write_text(
        f'[dock]\nid = "dock-test"\ndata_dir = "{cfg.data_dir}"\n'
        f'[[bay]]\nnumber = 1\nsim_dir = "{tmp_path / "bay1"}"\n'
    )
    ok = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    path = Path(victim["local_path"])
    os.chmod(path, 0o640)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert victim["clip_id"][:12] in bad.stdout and victim["file_name"] in bad.stdout
    assert "sha256" in bad.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill the disk needs root")
def test_disk_full_stops_offload_deletes_nothing_and_faults(tmp_path: Path) -> None:
    data = tmp_path / "smalldisk"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], check=True)
    try:
        cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
        cfg = type(cfg)(
            **{**cfg.__dict__, "dock": type(cfg.dock)(id="dock-test", data_dir=str(data))}
        )
        now = datetime.now()
        rec = simkit.SimRecorder(clips=simkit.shift(now - timedelta(hours=1), [4, 4, 4, 4, 4, 4]))
        originals = simkit.build(tmp_path / "bay1", rec)
        sizes = sum(p.stat().st_size for p in originals)
        assert sizes > 2**20, f"clips too small to fill the disk: {sizes}"
        with running(cfg) as (daemon, views):
            wait_for(lambda: views.latest(1).state == "fault", 60, "disk_full fault")  # type: ignore[union-attr]
            view = views.latest(1)
            records = list(daemon.services.index.iter_all())
        assert view is not None and "disk_full" in {f.code for f in view.findings}
        assert 0 < len(records) < len(originals)
        kept = [p for p in originals if p.exists()]
        assert len(kept) == len(originals) - len(records), "only verified clips left the recorder"
        for r in records:
            assert sha(Path(r["local_path"])) == r["sha256"]
        assert list((data / "evidence" / ".incoming").iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_many_photos_are_batched_durable_first_then_custody_then_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.bench.bench_offload import clip_name, media_dir

    cfg = dock_config(tmp_path)
    rec = simkit.SimRecorder(device_id="ZFY0000001")  # as the bench: the files are the clips
    photos = [media_dir(tmp_path / "bay1") / clip_name(n, "JPG", "ZFY0000001") for n in range(70)]
    photos[0].parent.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        photo.write_bytes(os.urandom(20_000))
    photos[69].write_bytes(photos[3].read_bytes())  # the same bytes in another batch
    photos[5].write_bytes(photos[4].read_bytes())  # and in the same batch: stored once each
    calls: list[tuple[str, list[str]]] = []
    with running(cfg) as (daemon, views):
        spy(monkeypatch, daemon.services, calls)
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        records = {r["clip_id"]: r for r in daemon.services.index.iter_all()}
    assert len(records) == 68 and all(Path(r["local_path"]).exists() for r in records.values())
    assert sorted(records) == sorted({sha(p) for p in photos})
    stored = [p for p in (cfg.data_dir / "evidence").rglob("*.JPG") if ".incoming" not in p.parts]
    assert len(stored) == 68, "a duplicate leaves no second copy"
    assert [kind for kind, _ in calls] == ["place", "custody", "index"] * 3  # 32 + 32 + 6
    for (_, stored), (_, logged), (_, indexed) in zip(
        calls[::3], calls[1::3], calls[2::3], strict=True
    ):
        assert set(indexed) == set(logged[::2]) == set(logged[1::2]) <= set(stored)
    entries = [e for e in iter_entries(cfg.data_dir / "custody.jsonl") if "sha256" in e]
    pairs = list(zip(entries[::2], entries[1::2], strict=True))
    assert all(a["event"] == "clip_offloaded" and b["event"] == "clip_verified" for a, b in pairs)
    assert all(a["sha256"] == b["sha256"] for a, b in pairs)
    assert verify_chain(cfg.data_dir / "custody.jsonl") == []


def spy(
    monkeypatch: pytest.MonkeyPatch, services: object, calls: list[tuple[str, list[str]]]
) -> None:
    """Record the order of a batch's steps: stored copies, custody entries, index rows.

    Batches are proved (fsync, read back, hash) in another thread while the next is staged;
    each must be proved before it is placed.
    """
    store, custody_log, index = services.store, services.custody, services.index  # type: ignore[attr-defined]
    prove, place = store.prove, store.place
    append_many, put_many = custody_log.append_many, index.put_many
    proved: set[str] = set()

    def prove_spy(staged: list) -> None:
        prove(staged)
        proved.update(str(s.tmp) for s in staged)

    def place_spy(staged: list) -> list:
        assert {str(s.tmp) for s in staged} <= proved, "placed before it was proved"
        copies = place(staged)
        calls.append(("place", [c.sha256 for c in copies if c.path.exists()]))
        return copies

    def custody_spy(items: list) -> list:
        if any(event == "clip_offloaded" for event, _ in items):  # append() goes through here too
            calls.append(("custody", [fields["sha256"] for _, fields in items]))
        return append_many(items)

    def index_spy(records: list) -> None:
        calls.append(("index", [r["clip_id"] for r in records]))
        put_many(records)

    monkeypatch.setattr(store, "prove", prove_spy)
    monkeypatch.setattr(store, "place", place_spy)
    monkeypatch.setattr(custody_log, "append_many", custody_spy)
    monkeypatch.setattr(index, "put_many", index_spy)


def no_progress(_n: int) -> None:
    """Progress is not looked at here."""


def test_a_batch_that_fails_verification_places_nothing(tmp_path: Path) -> None:
    from agent.evidence.store import EvidenceStore, VerifyFailed

    store = EvidenceStore(tmp_path / "data", reserve_bytes=0)
    sources = [tmp_path / f"p{n}.JPG" for n in range(3)]
    for source in sources:
        source.write_bytes(os.urandom(50_000))
    staged = []
    for source in sources:
        with open(source, "rb") as src:
            staged.append(
                store.stage(
                    src,
                    Path("ZFY1", "2026-11-25", source.name),
                    "bay1",
                    no_progress,
                    threading.Event(),
                )
            )
    assert [s.sha256 for s in staged] == [sha(p) for p in sources]
    flip_byte(staged[1].tmp, 0)  # the disk returns other bytes than were written
    with pytest.raises(VerifyFailed):
        store.commit(staged)
    assert not (store.root / "ZFY1").exists()
    assert list(store.incoming.iterdir()) == []


def test_a_batch_failing_verification_in_the_pipeline_faults_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch reads back wrong while the third is staged: the first stays stored."""
    from tests.bench.bench_offload import clip_name, media_dir

    cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
    rec = simkit.SimRecorder(device_id="ZFY0000001")
    photos = [media_dir(tmp_path / "bay1") / clip_name(n, "JPG", "ZFY0000001") for n in range(80)]
    photos[0].parent.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        photo.write_bytes(os.urandom(20_000))
    first = {sha(p) for p in photos[:32]}
    with running(cfg) as (daemon, views):
        store = daemon.services.store
        prove, batches = store.prove, []

        def corrupting_prove(staged: list) -> None:
            batches.append(staged)
            if len(batches) == 2:  # the disk gives back other bytes than were written
                flip_byte(staged[7].tmp, 0)
            prove(staged)

        monkeypatch.setattr(store, "prove", corrupting_prove)
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: views.latest(1).state == "fault", 60, "verify_failed fault")  # type: ignore[union-attr]
        view = views.latest(1)
        records = list(daemon.services.index.iter_all())
        alerts = [a for a in views.alerts if a.code == "verify_failed"]
    assert view is not None and "verify_failed" in {f.code for f in view.findings}
    assert len(records) == 32, "the first batch, proved before the failure, is stored"
    assert {r["clip_id"] for r in records} == first
    for r in records:
        assert sha(Path(r["local_path"])) == r["sha256"]
    assert list((cfg.data_dir / "evidence" / ".incoming").iterdir()) == [], "no temp file left"
    stored = [p for p in (cfg.data_dir / "evidence").rglob("*.JPG") if ".incoming" not in p.parts]
    assert len(stored) == 32, "nothing of the failed batch is placed"
    assert [p.exists() for p in photos] == [False] * 32 + [True] * 48, "only stored clips deleted"
    assert alerts, "IT is alerted"


def test_a_waiting_recorder_shows_identifying_with_the_reason(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    with running(cfg) as (daemon, views):
        daemon.dispatch(BayWaiting(1, "zfy_waiting_for_sdk", "waiting: bay 2 is in SDK mode"))
        wait_for(lambda: views.latest(1).state == "identifying", 10, "identifying")  # type: ignore[union-attr]
        view = views.latest(1)
        assert view is not None
        assert [(f.code, f.message) for f in view.findings] == [
            ("zfy_waiting_for_sdk", "waiting: bay 2 is in SDK mode")
        ]
        daemon.dispatch(Undocked(1))  # taken out before its turn
        wait_for(lambda: views.latest(1).state == "empty", 10, "empty")  # type: ignore[union-attr]
        assert views.latest(1).findings == []  # type: ignore[union-attr]
    assert custody(cfg.data_dir, "undocked") == [], "nothing was docked, nothing to log"


class PulledAtRecorder(SimulatedRecorder):
    """The simulated driver whose cable is pulled while one given file is being read."""

    pulled_at = ""

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        fh = super().open_clip(clip)
        if clip.name != self.pulled_at:
            return fh
        fh.close()
        return _EioReader()  # type: ignore[return-value]


class _EioReader:
    def readinto(self, _buf: bytearray) -> int:
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        pass

    def __enter__(self) -> _EioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_cable_pulled_in_a_later_batch_keeps_the_batches_copied_before(tmp_path: Path) -> None:
    """Batch 1 is being proved when batch 2's read fails: batch 1 is stored, nothing else."""
    from tests.bench.bench_offload import clip_name, media_dir

    cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
    bay = tmp_path / "bay-pull"
    simkit.dock(bay, simkit.SimRecorder(device_id="ZFY0000001"))
    photos = [media_dir(bay) / clip_name(n, "JPG", "ZFY0000001") for n in range(70)]
    photos[0].parent.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        photo.write_bytes(os.urandom(20_000))
    first = {sha(p) for p in photos[:32]}
    recorder = PulledAtRecorder(bay, ZoneInfo("UTC"))
    recorder.pulled_at = photos[40].name
    with running(cfg) as (daemon, views):
        daemon.dispatch(Docked(1, recorder, "simulated"))
        wait_for(lambda: "empty" in views.states(1)[1:], 30, "bay to let the recorder go")
        records = list(daemon.services.index.iter_all())
    assert {r["clip_id"] for r in records} == first, "batch 1, proved, is kept"
    for r in records:
        assert sha(Path(r["local_path"])) == r["sha256"]
    assert list((cfg.data_dir / "evidence" / ".incoming").iterdir()) == []
    assert len(custody(cfg.data_dir, "clip_offloaded")) == 32
    assert all(p.exists() for p in photos[32:]), "nothing unstored leaves the recorder"


def test_unparsed_name_gets_one_start_time_that_its_date_folder_agrees_with(
    tmp_path: Path,
) -> None:
    """The start of a clip whose name does not parse is decided once: folder = recorded_start."""
    cfg = dock_config(tmp_path, timezone="Asia/Shanghai")
    tz = ZoneInfo("Asia/Shanghai")
    rec = simkit.SimRecorder(clips=[simkit.SimClip(datetime.now(), 3, "MP4", name="odd clip.MP4")])
    (path,) = simkit.build(tmp_path / "bay1", rec, docked=False)
    written = datetime(2026, 11, 21, 0, 0, 1, tzinfo=tz)  # last written just after midnight
    os.utime(path, (written.timestamp(), written.timestamp()))
    with running(cfg) as (daemon, views):
        simkit.dock(tmp_path / "bay1", rec)
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        (record,) = list(daemon.services.index.iter_all())
    start = datetime.fromisoformat(record["recorded_start"]).astimezone(tz)
    assert "name_unparsed" in record["flags"]
    if record["start_source"] == "mtime":  # the 3 s recording began the day before
        assert start.date().isoformat() == "2026-11-20"
    assert Path(record["local_path"]).parent.name == start.date().isoformat()
