"""Start-up recovery: custody entries the index lost are applied, marked recovered."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from agent.events import ClipFlow, Freed, Purged, Synced
from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex
from agent.evidence.recovery import IndexRecovery, repairs
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for

REPO = Path(__file__).resolve().parent.parent
A, B = "a" * 64, "b" * 64


def test_repairs_name_what_the_index_lacks_and_nothing_it_has() -> None:
    rows = {
        A: {"clip_id": A, "state": "offloaded", "recorder_deleted": False, "held": False},
        B: {"clip_id": B, "state": "synced", "recorder_deleted": True, "held": False},
    }
    entries = [
        {"seq": 5, "event": "clip_synced", "sha256": A, "synced_at": "2026-12-01T01:00:00+00:00"},
        {"seq": 6, "event": "recorder_clip_deleted", "sha256": A},
        {"seq": 7, "event": "clip_synced", "sha256": B},  # the index has it already
        {"seq": 8, "event": "recorder_clip_missing", "sha256": B},
        {"seq": 9, "event": "note_created", "note_id": "N-1"},
        {"seq": 10, "event": "hold", "clip": "c" * 64, "reason": "case"},  # unknown clip
    ]
    (found,) = repairs(entries, lambda c: dict(rows[c]) if c in rows else None)
    assert found.clip_id == A
    assert found.changes == {
        "state": "synced",
        "synced_at": "2026-12-01T01:00:00+00:00",
        "ack_proven": True,  # an entry from before `ack` was logged was proved by its rules
        "recorder_deleted": True,
    }
    assert found.seqs == [5, 6]


def test_an_unproven_ack_is_recovered_unproven_and_its_later_proof_applied() -> None:
    rows = {A: {"clip_id": A, "state": "offloaded", "recorder_deleted": False, "held": False}}
    synced = {"seq": 5, "event": "clip_synced", "sha256": A, "ack": "unproven", "ts": "t"}
    (found,) = repairs([synced], lambda c: dict(rows[c]) if c in rows else None)
    assert found.changes == {"state": "synced", "synced_at": "t", "ack_proven": False}
    rows[A] |= found.changes
    proof = {"seq": 9, "event": "clip_ack_proven", "sha256": A, "ack": "receipt"}
    (found,) = repairs([synced, proof], lambda c: dict(rows[c]) if c in rows else None)
    assert found.changes == {"ack_proven": True} and found.seqs == [9]


def test_a_purge_custody_recorded_is_completed_and_a_release_applied() -> None:
    row = {"clip_id": A, "state": "synced", "held": True, "local_path": "/x/A.MP4"}
    entries = [
        {"seq": 3, "event": "hold", "clip": A, "release": True, "reason": "done"},
        {"seq": 4, "event": "local_copy_purged", "clip": A, "reason": "retention_expired",
         "local_path": "/x/A.MP4", "ts": "2026-12-01T00:00:00+00:00"},
    ]  # fmt: skip
    (found,) = repairs(entries, lambda c: dict(row))
    assert found.changes["held"] is False and found.changes["state"] == "purged"
    assert found.changes["purge_custody_seq"] == 4
    assert found.unlink == "/x/A.MP4"


def test_a_lost_deletion_record_is_applied_at_start_and_verify_passes(tmp_path: Path) -> None:
    """The custody log says the recorder copy was deleted; a power cut lost the index's note."""
    cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
    start = datetime.now() - timedelta(hours=1)
    simkit.build(tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1])))
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
    index = ClipIndex(cfg.data_dir)
    lost = [r["clip_id"] for r in index.iter_all()]
    for clip_id in lost:  # what the disk held after the cut: the index update never landed
        index.update(clip_id, recorder_deleted=False)
    index.close()
    (cfg.data_dir / "state" / "custody_applied.json").unlink(missing_ok=True)
    path = tmp_path / "dock.toml"
    path.write_text(config_toml(cfg))
    before = verify(path)
    assert before.returncode == 1 and "index says not deleted" in before.stdout
    with running(cfg) as (daemon, _views):
        assert daemon.parts is not None
        recovery = daemon.parts.index_recovery
        wait_for(recovery.done.is_set, 30, "recovery to finish")
        assert sorted(r.clip_id for r in recovery.applied or []) == sorted(lost)
        for clip_id in lost:
            row = daemon.services.index.get(clip_id)
            assert row is not None and row["recorder_deleted"] and row["recovered"]
    after = verify(path)
    assert after.returncode == 0, after.stdout + after.stderr


def test_the_mark_moves_so_a_later_start_reads_only_new_entries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    custody = CustodyLog(data / "custody.jsonl")
    index = ClipIndex(data)
    custody.append("docked", device_id="D", bay=1)
    recovery = IndexRecovery(index, custody.path, data, "after_upstream_ack")
    assert recovery.run() == []
    size = custody.path.stat().st_size
    assert (data / "state" / "custody_applied.json").read_text().find(str(size)) > 0
    custody.append("recorder_clip_deleted", sha256=A, device_id="D", file="x")
    assert recovery.run() == []  # a clip the index never held: nothing to apply
    custody.close()
    index.close()


def verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "verify", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_recovered_ack_is_published_as_the_sync_step_it_lost(tmp_path: Path) -> None:
    """A power cut after custody's clip_synced: the purger and the bay learn of it at start."""
    data = tmp_path / "data"
    custody = CustodyLog(data / "custody.jsonl")
    index = ClipIndex(data)
    index.put({"clip_id": A, "device_id": "D", "state": "offloaded", "recorder_deleted": False})
    index.put({"clip_id": B, "device_id": "D", "state": "synced", "recorder_deleted": False})
    custody.append("clip_synced", sha256=A, device_id="D", synced_at="2026-12-01T01:00:00+00:00")
    custody.append("recorder_clip_deleted", sha256=B, device_id="D", file="x")
    flow = ClipFlow()
    steps: list[object] = []
    for kind in (Synced, Freed, Purged):
        flow.subscribe(kind, steps.append)
    try:
        found = IndexRecovery(index, custody.path, data, "never", flow).run()
        assert sorted(r.clip_id for r in found) == [A, B]
        assert steps == [Synced(A, "D"), Freed(B, "D")]
        assert index.active() == []  # both finished under "never" or once freed: archived
    finally:
        custody.close()
        index.close()
