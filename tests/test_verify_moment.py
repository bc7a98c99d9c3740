"""The horizons of verify's moment (SPEC 9), as pure checks: newer entries are not mismatches."""

from __future__ import annotations

from pathlib import Path

from agent.evidence import moment
from agent.evidence.custody import CustodyLog
from agent.evidence.custody_check import cross_check
from agent.notes.check import notes_cross_check

SHA = "c" * 64


def test_a_note_entry_after_the_horizon_is_newer_than_the_check() -> None:
    entries = [{"seq": 5, "event": "note_created", "note_id": "N-1"}]
    assert notes_cross_check(entries, [], horizon=4) == []
    assert notes_cross_check(entries, [], horizon=5) == [
        "custody seq 5: note_created for note N-1, which notes.json does not hold"
    ]
    assert notes_cross_check(entries, []) != [], "no horizon: every entry counts"


def test_a_purge_after_the_horizon_need_not_show_in_the_index_yet() -> None:
    offload = {"seq": 1, "event": "clip_offloaded", "hash": "h1", "sha256": SHA}
    purge = {"seq": 7, "event": "local_copy_purged", "clip": SHA}
    row = {"clip_id": SHA, "state": "synced", "custody_seq": 1, "custody_hash": "h1"}
    assert cross_check([offload, purge], [row], horizon=6) == []
    (problem,) = cross_check([offload, purge], [row], horizon=7)
    assert problem.startswith("custody seq 7: local_copy_purged for clip cccccccccccc")
    purged = {**row, "state": "purged"}
    assert cross_check([offload], [purged], horizon=0) == [
        "clip cccccccccccc: purged in the index but no local_copy_purged custody entry"
    ], "what the index says is judged against every entry read, whatever the horizon"


def test_a_moment_reads_custody_before_and_after_the_derived_files(tmp_path: Path) -> None:
    log = CustodyLog(tmp_path / "custody.jsonl")
    log.append("docked", device_id="ZFY1")
    log.close()
    now = moment.take(tmp_path)
    assert (now.before.seq, now.after.seq) == (1, 1)
    assert now.notes == [] and now.index.active() == []
    empty = moment.take(tmp_path / "nothing")
    assert (empty.before.size, empty.after.seq) == (0, 0)
