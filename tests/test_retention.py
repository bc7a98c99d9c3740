"""Retention: classes by rule, holds, and a purger that never touches an un-acked clip."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.cli import main
from agent.config import PolicySection, parse_config
from agent.daemon.services import Services
from agent.events import ClipFlow, EventBus, Synced
from agent.evidence.custody import iter_entries
from agent.evidence.index import ArchiveFollower, ClipIndex
from agent.evidence.lifecycle import archive_if_finished, finished
from agent.evidence.retention.classes import classify, flagged, keep_days
from agent.evidence.retention.copies import LocalCopies
from agent.evidence.retention.holds import HoldError, set_hold
from agent.evidence.retention.purger import Purger
from agent.evidence.retention.rules import DISK_PRESSURE, RETENTION_EXPIRED, select_purges
from agent.evidence.retention.settings import RetentionClass, RetentionRule, RetentionSection
from agent.evidence.store import EvidenceStore
from agent.schema import ConfigError
from firmware_interface import simkit
from tests.dock import dock_config, running, settled, wait_for
from tests.test_export import TZ, Dock, open_dock

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
POLICY = PolicySection(local_retention_days=30, disk_reserve_bytes=0, disk_low_pct=10)
RULES = RetentionSection(
    classes=[
        RetentionClass("routine", 0),
        RetentionClass("evidence", 180),
        RetentionClass("long_term", 3650),
    ],
    rule=[
        RetentionRule("marked", "evidence"),
        RetentionRule("complaint", "long_term"),
        RetentionRule("late_offload", "evidence", media_type="photo"),
    ],
)
GiB = 2**30


def rec(n: int, state: str = "synced", days_ago: float = 60, **extra: Any) -> dict[str, Any]:
    """A minimal record acked `days_ago` days before NOW."""
    synced = (NOW - timedelta(days=days_ago)).isoformat() if state != "offloaded" else None
    return {
        "clip_id": f"{n:064x}",
        "sha256": f"{n:064x}",
        "state": state,
        "size": GiB,
        "flags": [],
        "media_type": "video",
        "held": False,
        "synced_at": synced,
        "offloaded_at": (NOW - timedelta(days=days_ago + 1)).isoformat(),
        **extra,
    }


# ---- classes --------------------------------------------------------------------------------


def test_classify_by_flags_longest_kept_class_wins() -> None:
    assert classify(rec(1), RULES) == "routine"
    assert classify(rec(1, flags=["marked"]), RULES) == "evidence"
    assert classify(rec(1, flags=["marked", "complaint"]), RULES) == "long_term"
    assert classify(rec(1, flags=["late_offload"]), RULES) == "routine"
    assert classify(rec(1, flags=["late_offload"], media_type="photo"), RULES) == "evidence"


def test_retention_config_is_typed_and_unknown_keys_refused() -> None:
    base: dict[str, Any] = {"dock": {"id": "d"}}
    cfg = parse_config(
        {
            **base,
            "retention": {
                "default_class": "routine",
                "classes": [{"name": "routine"}, {"name": "evidence", "keep_days": 365}],
                "rule": [{"flag": "marked", "retention_class": "evidence"}],
            },
        }
    )
    assert cfg.retention.keep_days("evidence") == 365
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "retention": {"rule": [{"flag": "x", "class": "evidence"}]}})
    assert any("retention.rule[0].class: unknown key" in p for p in exc.value.problems)
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "retention": {"default_class": "forever"}})
    assert exc.value.problems == [
        "retention.default_class = 'forever': expected one of routine, evidence, long_term"
    ]


# ---- selection ------------------------------------------------------------------------------


def test_only_acked_clips_past_their_class_retention_are_selected() -> None:
    records = [
        rec(1, days_ago=31),
        rec(2, days_ago=29),
        rec(3, days_ago=100, flags=["marked"], retention_class="evidence"),  # 180 days
        rec(4, days_ago=200, flags=["marked"], retention_class="evidence"),
        rec(5, state="offloaded", days_ago=400),
        rec(6, days_ago=400, held=True),
        rec(7, state="purged", days_ago=400),
    ]
    chosen = select_purges(records, NOW, POLICY, 500 * GiB, 1000 * GiB, RULES)
    assert chosen == [(f"{4:064x}", RETENTION_EXPIRED), (f"{1:064x}", RETENTION_EXPIRED)]


def test_disk_pressure_purges_oldest_acked_first_and_never_unacked() -> None:
    records = [
        rec(1, state="offloaded", days_ago=300),
        rec(2, days_ago=3),
        rec(3, days_ago=5),
        rec(4, days_ago=4, held=True),
        rec(5, days_ago=1),
        rec(6, state="offloaded", days_ago=200),
    ]
    # 100 GiB disk, 7 GiB free: 10 % is 10 GiB, so 3 GiB must go.
    chosen = select_purges(records, NOW, POLICY, 7 * GiB, 100 * GiB, RULES)
    assert chosen == [
        (f"{3:064x}", DISK_PRESSURE),
        (f"{2:064x}", DISK_PRESSURE),
        (f"{5:064x}", DISK_PRESSURE),
    ]
    # A full disk with nothing acked purges nothing at all.
    unacked = [rec(n, state="offloaded", days_ago=400) for n in range(10)]
    assert select_purges(unacked, NOW, POLICY, 0, 100 * GiB, RULES) == []


def test_disk_reserve_counts_as_pressure() -> None:
    policy = PolicySection(local_retention_days=30, disk_reserve_bytes=50 * GiB, disk_low_pct=0)
    chosen = select_purges([rec(1, days_ago=1)], NOW, policy, 49 * GiB, 1000 * GiB, RULES)
    assert chosen == [(f"{1:064x}", DISK_PRESSURE)]


# ---- the purger with real files -------------------------------------------------------------


class Clock:
    """A settable trusted clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[Dock]:
    d = open_dock(tmp_path, "[policy]\nlocal_retention_days = 30\ndisk_reserve_bytes = 0\n")
    yield d
    d.custody.close()
    d.index.close()


def services(dock: Dock) -> Services:
    """The daemon's shared parts over the test dock's index and custody log."""
    store = EvidenceStore(dock.cfg.data_dir, 0)
    return Services(
        dock.cfg, TZ, store, dock.index, dock.custody, EventBus(), ClipFlow(), lambda: True
    )


def acked(dock: Dock, name: str, days_ago: float, **extra: Any) -> dict[str, Any]:
    """A stored clip with a thumbnail, acked `days_ago` days before NOW."""
    record = dock.clip(name, name.encode() * 1000, **extra)
    thumb = Path(record["local_path"]).with_suffix(".thumb.jpg")
    thumb.write_bytes(b"jpeg")
    synced_at = (NOW - timedelta(days=days_ago)).isoformat()
    return dock.index.update(
        record["clip_id"], state="synced", synced_at=synced_at, thumbnail=str(thumb)
    )


def test_purge_removes_file_and_thumbnail_logs_custody_and_archives(dock: Dock) -> None:
    old = acked(dock, "OLD.MP4", days_ago=31)
    dock.custody.append("recorder_clip_deleted", device_id="ZFY0012345", sha256=old["clip_id"])
    dock.index.update(old["clip_id"], recorder_deleted=True)
    young = acked(dock, "YOUNG.MP4", days_ago=2)
    unacked = dock.clip("NEW.MP4", b"not yet at central")
    purger = Purger(services(dock), clock=Clock(NOW))

    assert purger.run_pass() == [(old["clip_id"], RETENTION_EXPIRED)]

    assert not Path(old["local_path"]).exists() and not Path(old["thumbnail"]).exists()
    assert Path(young["local_path"]).exists() and Path(unacked["local_path"]).exists()
    after = dock.index.get(old["clip_id"])
    assert after is not None and after["state"] == "purged" and after["purged_at"]
    assert old["clip_id"] not in {r["clip_id"] for r in dock.index.active()}  # archived
    entry = dock.entries()[-1]
    assert entry["event"] == "local_copy_purged" and entry["clip"] == old["clip_id"]
    assert entry["reason"] == RETENTION_EXPIRED and entry["keep_days"] == 30
    assert main(["verify", "-c", str(dock.config)]) == 0


def test_a_held_clip_survives_retention_until_released(dock: Dock) -> None:
    record = acked(dock, "HELD.MP4", days_ago=400)
    s = services(dock)
    done = set_hold(dock.index, dock.custody, record["clip_id"], "投诉 2027-03", False, "test")
    assert done["held"] is True and done["hold_reason"] == "投诉 2027-03"
    purger = Purger(s, clock=Clock(NOW))

    assert purger.run_pass() == []
    assert Path(record["local_path"]).exists()

    release = ["hold", record["clip_id"][:12], "--reason", "case closed", "--release"]
    assert main([*release, "-c", str(dock.config)]) == 0
    assert purger.run_pass() == [(record["clip_id"], RETENTION_EXPIRED)]
    holds = [e for e in dock.entries() if e["event"] == "hold"]
    assert [(h["release"], h["reason"]) for h in holds] == [
        (False, "投诉 2027-03"),
        (True, "case closed"),
    ]


def test_disk_pressure_never_purges_an_unacked_clip(dock: Dock) -> None:
    unacked = [dock.clip(f"U{n}.MP4", bytes([n]) * 5000) for n in range(3)]
    young = acked(dock, "ACKED.MP4", days_ago=1)
    usage = shutil.disk_usage(dock.cfg.data_dir)
    # A policy that finds the disk far too full: everything acked may go, nothing else.
    policy = PolicySection(local_retention_days=30, disk_reserve_bytes=usage.total * 2)
    s = services(dock)
    s.cfg = replace(s.cfg, policy=policy)
    Purger(s, clock=Clock(NOW)).run_pass()

    assert not Path(young["local_path"]).exists()
    assert dock.entries()[-1]["reason"] == DISK_PRESSURE
    for record in unacked:
        assert Path(record["local_path"]).exists()
        assert (dock.index.get(record["clip_id"]) or {})["state"] == "offloaded"


def test_the_first_pass_under_a_configuration_reclassifies_what_its_rules_change(
    dock: Dock,
) -> None:
    """Stored under rules without `marked -> evidence` (the daemon restarted or reloaded with
    it): active clips take the new class; archived copies only a longer one."""
    record = dock.clip("M.MP4", b"marked under other rules")
    dock.index.update(record["clip_id"], flags=["marked"])
    kept = archived(dock, "K.MP4", days_ago=1, flags=["marked"])
    longer = archived(dock, "L.MP4", days_ago=1, retention_class="evidence")
    assert (dock.index.get(kept["clip_id"]) or {})["retention_class"] == "routine"
    Purger(services(dock), clock=Clock(NOW)).run_pass()
    assert (dock.index.get(record["clip_id"]) or {})["retention_class"] == "evidence"
    assert (dock.index.get(kept["clip_id"]) or {})["retention_class"] == "evidence"
    assert (dock.index.get(longer["clip_id"]) or {})["retention_class"] == "evidence"


def test_hold_refusals(dock: Dock, capsys: pytest.CaptureFixture[str]) -> None:
    record = dock.clip("P.MP4", b"gone", state="purged")
    with pytest.raises(HoldError, match="already purged"):
        set_hold(dock.index, dock.custody, record["clip_id"], "why", False, "test")
    with pytest.raises(HoldError, match="reason"):
        set_hold(dock.index, dock.custody, record["clip_id"], " ", True, "test")
    assert main(["hold", record["clip_id"], "--reason", "", "-c", str(dock.config)]) == 2
    assert main(["hold", "ab" * 8, "--reason", "x", "-c", str(dock.config)]) == 1
    assert "unknown clip" in capsys.readouterr().err
    assert not [
        e for e in iter_entries(dock.cfg.data_dir / "custody.jsonl") if e["event"] == "hold"
    ]


def test_the_daemon_carries_the_purger(tmp_path: Path) -> None:
    from agent.daemon.wiring import assemble
    from tests.dock import dock_config

    daemon = assemble(dock_config(tmp_path))
    try:
        purgers = [p for p in daemon.plugins if isinstance(p, Purger)]
        assert len(purgers) == 1 and callable(purgers[0].tick)
        assert purgers[0].run_pass() == []
    finally:
        daemon.services.index.close()


# ---- finished clips leave the active set; the purger follows the archive --------------------


def test_finished_means_acked_and_the_recorder_copy_handled() -> None:
    synced = rec(1)
    assert not finished(rec(1, state="offloaded", recorder_deleted=True), "after_local_verify")
    assert not finished(synced, "after_upstream_ack")  # the recorder may come back
    assert not finished(synced, "after_local_verify")
    assert finished(synced, "never")
    assert finished(rec(1, recorder_deleted=True), "after_upstream_ack")
    assert finished(rec(1, state="purged", recorder_deleted=True), "after_upstream_ack")
    assert not finished(rec(1, state="purged"), "after_upstream_ack")


def archived(dock: Dock, name: str, days_ago: float, **extra: Any) -> dict[str, Any]:
    """An acked clip freed on the recorder and archived, as the bay leaves it."""
    record = acked(dock, name, days_ago, **extra)
    dock.custody.append("recorder_clip_deleted", device_id="ZFY0012345", sha256=record["clip_id"])
    updated = dock.index.update(record["clip_id"], recorder_deleted=True)
    assert archive_if_finished(dock.index, updated, "after_upstream_ack")
    return updated


def active_ids(dock: Dock) -> set[str]:
    return {r["clip_id"] for r in dock.index.active()}


def test_archived_clip_is_found_and_purged_after_retention(dock: Dock) -> None:
    record = archived(dock, "A.MP4", days_ago=2)
    clip_id = record["clip_id"]
    assert clip_id not in active_ids(dock)
    assert (dock.index.get(clip_id) or {})["state"] == "synced"
    assert [r["clip_id"] for r in dock.index.iter_all()] == [clip_id]
    clock = Clock(NOW)
    purger = Purger(services(dock), clock=clock)

    assert purger.run_pass() == []  # 2 days of 30
    assert len(purger.copies) == 1 and Path(record["local_path"]).exists()
    clock.now = NOW + timedelta(days=29)
    assert purger.run_pass() == [(clip_id, RETENTION_EXPIRED)]

    assert not Path(record["local_path"]).exists() and len(purger.copies) == 0
    after = dock.index.get(clip_id)
    assert after is not None and after["state"] == "purged" and clip_id not in active_ids(dock)
    assert [r["state"] for r in dock.index.iter_all()] == ["purged"]
    assert purger.run_pass() == []
    assert main(["verify", "-c", str(dock.config)]) == 0


def test_purger_picks_up_clips_archived_after_its_start_up_scan(dock: Dock) -> None:
    legacy = acked(dock, "LEGACY.MP4", days_ago=40)  # finished but still active (older agent)
    dock.index.update(legacy["clip_id"], recorder_deleted=True)
    purger = Purger(services(dock), clock=Clock(NOW))
    assert purger.run_pass() == [(legacy["clip_id"], RETENTION_EXPIRED)]
    old = archived(dock, "OLD.MP4", days_ago=31)
    assert purger.run_pass() == [(old["clip_id"], RETENTION_EXPIRED)]
    assert active_ids(dock) == set()


def test_an_active_clip_becomes_a_candidate_by_its_synced_step_not_a_rescan(dock: Dock) -> None:
    s = services(dock)
    purger = Purger(s, clock=Clock(NOW))
    assert purger.run_pass() == []  # the first pass looked at the whole active set
    old = acked(dock, "OLD.MP4", days_ago=31)  # acked behind the purger's back: no step
    assert purger.run_pass() == [] and Path(old["local_path"]).exists()
    s.flow.publish(Synced(old["clip_id"], "ZFY0012345"))
    assert purger.run_pass() == [(old["clip_id"], RETENTION_EXPIRED)]
    assert not Path(old["local_path"]).exists()


def test_a_reload_has_the_next_pass_look_at_the_whole_active_set(dock: Dock) -> None:
    s = services(dock)
    purger = Purger(s, clock=Clock(NOW))
    assert purger.run_pass() == []
    old = acked(dock, "OLD.MP4", days_ago=31)
    s.cfg = replace(s.cfg)  # what Daemon.reload does: a new configuration object
    assert purger.run_pass() == [(old["clip_id"], RETENTION_EXPIRED)]


def test_flags_and_the_class_they_make_are_one_index_change() -> None:
    """retention.classes owns a clip's class: what offload and analysis store with its flags."""
    assert flagged(rec(1), (), RULES) == {"flags": [], "retention_class": "routine"}
    marked = flagged(rec(1, flags=["gap_before"]), {"marked"}, RULES)
    assert marked == {"flags": ["gap_before", "marked"], "retention_class": "evidence"}
    both = flagged(rec(1, flags=["marked"]), ["complaint"], RULES)
    assert both["retention_class"] == "long_term"
    stored = rec(1, flags=["marked"], retention_class="evidence")
    assert keep_days(stored, POLICY, RULES) == 180
    assert keep_days({**stored, "retention_class": "routine"}, POLICY, RULES) == 30, "as stored"


def test_a_held_archived_clip_survives_until_released(dock: Dock) -> None:
    record = archived(dock, "HELD.MP4", days_ago=400)
    clip_id = record["clip_id"]
    purger = Purger(services(dock), clock=Clock(NOW))
    purger.copies.load()  # the start-up scan saw it unheld
    # Held by another process (the CLI): the purger sees it through the shard, not a callback.
    assert main(["hold", clip_id[:12], "--reason", "complaint 7", "-c", str(dock.config)]) == 0

    assert purger.run_pass() == [] and Path(record["local_path"]).exists()
    assert purger.purge(clip_id, RETENTION_EXPIRED) is False  # re-checked at the last moment

    set_hold(dock.index, dock.custody, clip_id, "case closed", True, "test")
    assert purger.run_pass() == [(clip_id, RETENTION_EXPIRED)]
    assert not Path(record["local_path"]).exists()


def test_a_hold_taken_before_start_up_is_seen_by_the_scan(dock: Dock) -> None:
    record = archived(dock, "HELD.MP4", days_ago=400)
    set_hold(dock.index, dock.custody, record["clip_id"], "complaint 8", False, "test")
    assert Purger(services(dock), clock=Clock(NOW)).run_pass() == []
    assert Path(record["local_path"]).exists()


def fixed_disk(monkeypatch: pytest.MonkeyPatch, free: int, total: int) -> None:
    """The purger sees a disk of `total` bytes with `free` free."""
    usage = SimpleNamespace(total=total, used=total - free, free=free)
    monkeypatch.setattr("agent.evidence.retention.purger.shutil.disk_usage", lambda _path: usage)


def test_disk_pressure_purges_archived_acked_oldest_first_never_unacked(
    dock: Dock, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 5000
    a = archived(dock, "A.MP4", days_ago=5)
    b = archived(dock, "B.MP4", days_ago=3)
    c = archived(dock, "C.MP4", days_ago=1)
    held = archived(dock, "D.MP4", days_ago=4, held=True)
    e = acked(dock, "E.MP4", days_ago=2)  # acked, recorder copy not yet freed: still active
    unacked = dock.clip("U.MP4", b"u" * size)
    assert {r["size"] for r in (a, b, c, held, e, unacked)} == {size}
    # 100 GiB disk, disk_low_pct 10: 10 GiB must be free; 12,000 bytes short.
    fixed_disk(monkeypatch, 10 * GiB - 12_000, 100 * GiB)

    done = Purger(services(dock), clock=Clock(NOW)).run_pass()

    assert done == [(r["clip_id"], DISK_PRESSURE) for r in (a, b, e)]
    for record in (c, held, unacked):
        assert Path(record["local_path"]).exists()
    assert (dock.index.get(unacked["clip_id"]) or {})["state"] == "offloaded"
    fixed_disk(monkeypatch, 0, 100 * GiB)  # even a full disk: unacked and held stay
    assert Purger(services(dock), clock=Clock(NOW)).run_pass() == [(c["clip_id"], DISK_PRESSURE)]
    assert Path(unacked["local_path"]).exists() and Path(held["local_path"]).exists()


class GatedFollower(ArchiveFollower):
    """An archive follower whose polls wait for a gate: a slow start-up scan."""

    def __init__(self, archive_dir: Path, gate: threading.Event) -> None:
        super().__init__(archive_dir)
        self.gate = gate

    def poll(self, stop: threading.Event | None = None) -> Iterator[tuple[str, bytes]]:
        """Wait for the gate, then follow the shards."""
        self.gate.wait(30)
        yield from super().poll(stop)


def test_start_up_scan_runs_in_the_background(dock: Dock) -> None:
    record = archived(dock, "A.MP4", days_ago=31)
    gate = threading.Event()
    purger = Purger(services(dock), Clock(NOW), GatedFollower(dock.index.archive_dir, gate))
    started = time.monotonic()
    purger.start()
    purger.tick()  # scan not done: the pass waits, housekeeping does not
    assert time.monotonic() - started < 1.0 and not purger.copies.ready.is_set()
    assert Path(record["local_path"]).exists()
    gate.set()
    assert purger.copies.ready.wait(10)
    purger.tick()
    assert not Path(record["local_path"]).exists()
    purger.stop()


def test_daemon_starts_at_once_with_a_large_archive(tmp_path: Path) -> None:
    from agent.daemon.wiring import assemble

    cfg = dock_config(tmp_path)
    history = archive_history(cfg.data_dir, 20_000)
    daemon = assemble(cfg)
    purger = next(p for p in daemon.plugins if isinstance(p, Purger))
    gate = threading.Event()
    follower = GatedFollower(daemon.services.index.archive_dir, gate)
    purger.copies = LocalCopies(daemon.services.index, follower)  # before the daemon starts
    started = time.monotonic()
    daemon.start()
    try:
        assert time.monotonic() - started < 2.0 and not purger.copies.ready.is_set()
        gate.set()
        assert purger.copies.ready.wait(30)
        assert len(purger.copies) == history
    finally:
        daemon.stop()


def archive_history(data_dir: Path, clips: int) -> int:
    """Archive `clips` finished clips (one in ten still with its local copy); returns that count."""
    index = ClipIndex(data_dir)
    rows = [rec(n, state="synced" if n % 10 == 0 else "purged", days_ago=1) for n in range(clips)]
    index.import_archived(rows)
    index.close()
    return sum(1 for r in rows if r["state"] == "synced")


def test_redock_under_never_recopies_then_drops_archived_clips(tmp_path: Path) -> None:
    """Archived clips are not in the active set: a re-dock copies them, sees the sha256, drops."""
    cfg = dock_config(tmp_path, delete_from_recorder="never")
    rec_ = simkit.SimRecorder(clips=simkit.shift(datetime.now() - timedelta(hours=2), [1, 1, 1]))
    originals = simkit.build(tmp_path / "bay1", rec_)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "first docking")
        s = daemon.services
        records = s.index.active()
        for r in records:  # what sync does on each ack under "never"
            updated = s.index.update(r["clip_id"], state="synced", synced_at=NOW.isoformat())
            assert archive_if_finished(s.index, updated, "never")
        assert s.index.active() == []
        purged = records[0]
        assert Purger(s, clock=Clock(NOW)).purge(purged["clip_id"], RETENTION_EXPIRED)
        simkit.undock(tmp_path / "bay1")
        wait_for(lambda: views.latest(1).state == "empty", 10, "undock")  # type: ignore[union-attr]
        simkit.dock(tmp_path / "bay1", rec_)
        wait_for(lambda: views.latest(1).state != "empty", 10, "second docking")  # type: ignore[union-attr]
        wait_for(lambda: settled(daemon, views, 1), 60, "second docking to finish")
        after = {r["clip_id"]: r for r in s.index.iter_all()}
        assert s.index.active() == []  # nothing indexed twice
    assert len(after) == len(originals) and all(p.exists() for p in originals)
    assert after[purged["clip_id"]]["state"] == "purged"
    assert not Path(purged["local_path"]).exists()  # the re-copy of a purged clip is dropped
    for r in records[1:]:
        assert Path(r["local_path"]).exists()  # a record's own copy is never dropped
    stored = [
        p
        for p in (cfg.data_dir / "evidence").rglob("*")
        if p.is_file() and ".incoming" not in p.parts and not p.name.endswith(".thumb.jpg")
    ]
    assert len(stored) == len(originals) - 1
    offloaded = [
        e for e in iter_entries(cfg.data_dir / "custody.jsonl") if e["event"] == "clip_offloaded"
    ]
    assert len(offloaded) == len(originals)
