"""Clip index: active set in TinyDB, archive shards, crash-safe files, threads."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from agent.evidence.index import ArchiveFollower, ClipIndex, IndexCorrupt, line_clip_id, shard_name


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def rec(n: int, **extra: object) -> dict:
    return {
        "clip_id": cid(n),
        "sha256": cid(n),
        "device_id": "ZFY0012345",
        "state": "offloaded",
        "size": 1000 + n,
        "offloaded_at": f"2026-11-21T09:{n % 60:02d}:00+00:00",
        "flags": [],
        **extra,
    }


@pytest.fixture
def index(tmp_path: Path) -> ClipIndex:
    return ClipIndex(tmp_path)


def test_put_get_update_and_reopen(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1))
    index.put(rec(2, device_id="ZFY9"))
    updated = index.update(cid(1), state="synced", synced_at="2026-11-21T10:00:00+00:00")
    assert updated["state"] == "synced" and updated["size"] == 1001
    index.close()
    again = ClipIndex(tmp_path)
    assert again.get(cid(1)) == updated
    assert again.get(cid(2))["device_id"] == "ZFY9"  # type: ignore[index]
    assert again.get(cid(3)) is None


def test_put_replaces_rather_than_merges(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1, thumbnail="a.jpg"))
    index.put(rec(2))
    index.put(rec(1))
    assert "thumbnail" not in index.get(cid(1))  # type: ignore[operator]
    assert len(index.active()) == 2
    assert ClipIndex(tmp_path).active() == index.active()


def test_file_matches_memory_after_every_kind_of_change(tmp_path: Path, index: ClipIndex) -> None:
    for n in range(6):
        index.put(rec(n))
    index.update(cid(2), state="synced", flags=["marked"])
    index.archive(cid(5))  # the highest doc id goes: its number is reused next
    index.put(rec(7, bay=3))
    index.put(rec(3, state="synced"))
    replayed = ClipIndex(tmp_path)  # snapshot (none yet) plus the journal
    assert sorted(replayed.active(), key=str) == sorted(index.active(), key=str)
    index.compact()
    on_disk = json.loads((tmp_path / "index" / "active.json").read_text())
    assert sorted(on_disk["active"].values(), key=str) == sorted(index.active(), key=str)
    assert (tmp_path / "index" / "active.journal").stat().st_size == 0


def test_returned_records_are_copies(index: ClipIndex) -> None:
    index.put(rec(1))
    got = index.get(cid(1))
    assert got is not None
    got["flags"].append("tampered")
    assert index.get(cid(1))["flags"] == []  # type: ignore[index]


def test_update_of_unknown_clip_raises(index: ClipIndex) -> None:
    with pytest.raises(KeyError):
        index.update(cid(9), state="synced")
    with pytest.raises(KeyError):
        index.archive(cid(9))


def test_archive_moves_the_clip_to_its_shard(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1, state="synced"))
    index.put(rec(2))
    index.archive(cid(1))
    index.archive(cid(1))  # idempotent
    assert [r["clip_id"] for r in index.active()] == [cid(2)]
    assert index.get(cid(1))["state"] == "synced"  # type: ignore[index]
    shard = tmp_path / "index" / "archive" / shard_name(cid(1))
    assert [json.loads(line)["clip_id"] for line in shard.read_text().splitlines()] == [cid(1)]


def test_update_of_an_archived_clip_appends_a_version(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1, state="synced"))
    index.archive(cid(1))
    index.update(cid(1), state="purged", purged_at="2026-12-21T00:00:00+00:00")
    index.close()
    again = ClipIndex(tmp_path)
    assert again.get(cid(1))["state"] == "purged"  # type: ignore[index]
    assert again.active() == []
    shard = tmp_path / "index" / "archive" / shard_name(cid(1))
    assert len(shard.read_text().splitlines()) == 2
    assert [r["state"] for r in again.iter_all()] == ["purged"]


def test_iter_all_yields_each_clip_once_in_its_latest_version(index: ClipIndex) -> None:
    for n in range(40):
        index.put(rec(n, state="synced"))
    for n in range(30):
        index.archive(cid(n))
    index.update(cid(5), held=True)
    all_records = {r["clip_id"]: r for r in index.iter_all()}
    assert len(all_records) == 40
    assert all_records[cid(5)]["held"] is True
    assert len(list(index.iter_all())) == 40


def test_torn_last_line_of_a_shard_is_ignored_then_cut(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1, state="synced"))
    index.archive(cid(1))
    shard = tmp_path / "index" / "archive" / shard_name(cid(1))
    with open(shard, "ab") as fh:
        fh.write(json.dumps(rec(1, state="purged"))[:40].encode())
    assert index.get(cid(1))["state"] == "synced"  # type: ignore[index]
    index.update(cid(1), held=True)
    lines = shard.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["clip_id"] == cid(1) for line in lines)


def test_find_matches_active_records_by_equality(index: ClipIndex) -> None:
    index.put(rec(1, device_id="A"))
    index.put(rec(2, device_id="B"))
    index.put(rec(3, device_id="A", state="synced"))
    assert {r["clip_id"] for r in index.find(device_id="A")} == {cid(1), cid(3)}
    assert [r["clip_id"] for r in index.find(device_id="A", state="synced")] == [cid(3)]


def test_stats_report_the_sync_backlog(index: ClipIndex) -> None:
    assert index.stats()["oldest_unsynced_offloaded_at"] is None
    index.put(rec(1, offloaded_at="2026-11-21T10:00:00+08:00"))  # 02:00 UTC: the oldest
    index.put(rec(2, offloaded_at="2026-11-21T03:00:00+00:00"))
    index.put(rec(3, state="synced"))
    stats = index.stats()
    assert stats["active_clips"] == 3 and stats["unsynced_clips"] == 2
    assert stats["unsynced_bytes"] == 1001 + 1002
    assert stats["oldest_unsynced_offloaded_at"] == "2026-11-21T10:00:00+08:00"


def test_active_file_is_always_whole_json(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1))
    index.close()  # a clean shutdown compacts the journal into the snapshot
    data = json.loads((tmp_path / "index" / "active.json").read_text())
    assert [d["clip_id"] for d in data["active"].values()] == [cid(1)]
    assert not list((tmp_path / "index").glob(".active.json.*"))


def test_values_json_cannot_hold_are_refused_without_changing_state(index: ClipIndex) -> None:
    index.put(rec(1))
    with pytest.raises(TypeError):
        index.update(cid(1), local_path=Path("/x"))
    assert "local_path" not in index.get(cid(1))  # type: ignore[operator]


def test_a_second_process_sees_and_keeps_changes(tmp_path: Path, index: ClipIndex) -> None:
    """A CLI command (hold) changes the index while the daemon has it open."""
    index.put(rec(1))
    cli = ClipIndex(tmp_path)
    cli.update(cid(1), held=True, hold_reason="complaint")
    index.put(rec(2))
    assert index.get(cid(1))["held"] is True  # type: ignore[index]
    assert {r["clip_id"] for r in cli.active()} == {cid(1), cid(2)}


def test_concurrent_bay_workers(index: ClipIndex) -> None:
    def bay(b: int) -> None:
        for n in range(b * 100, b * 100 + 25):
            index.put(rec(n, bay=b))
            index.update(cid(n), state="synced")
            if n % 2:
                index.archive(cid(n))

    threads = [threading.Thread(target=bay, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = list(index.iter_all())
    assert len(records) == 100 and all(r["state"] == "synced" for r in records)
    assert len(index.active()) == 52


def test_import_archived_writes_shards_in_bulk(index: ClipIndex) -> None:
    assert index.import_archived(rec(n, state="synced") for n in range(500)) == 500
    assert index.active() == []
    assert index.get(cid(123))["size"] == 1123  # type: ignore[index]
    assert len(list(index.iter_all())) == 500


def test_a_damaged_active_file_is_named_not_silently_emptied(tmp_path: Path) -> None:
    ClipIndex(tmp_path).put(rec(1))
    (tmp_path / "index" / "active.json").write_text('{"active": {"1": {"clip')
    with pytest.raises(IndexCorrupt, match="active.json"):
        ClipIndex(tmp_path)


def followed(follower: ArchiveFollower) -> list[tuple[str, str]]:
    """(clip_id, state) of each line a poll yields."""
    return [(c, json.loads(line)["state"]) for c, line in follower.poll()]


def test_archive_follower_reads_history_once_then_only_appends(
    tmp_path: Path, index: ClipIndex
) -> None:
    for n in range(5):
        index.put(rec(n, state="synced"))
        index.archive(cid(n))
    index.update(cid(1), state="purged")
    follower = index.follow_archive()
    first = followed(follower)
    assert sorted(first) == sorted([(cid(n), "purged" if n == 1 else "synced") for n in range(5)])
    assert followed(follower) == []
    other = ClipIndex(tmp_path)  # another process (the CLI) appends a version
    other.update(cid(2), held=True)
    other.update(cid(2), state="purged")
    assert followed(follower) == [(cid(2), "synced"), (cid(2), "purged")]


def test_archive_follower_waits_for_a_torn_line_to_end(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1, state="synced"))
    index.archive(cid(1))
    follower = index.follow_archive()
    assert len(list(follower.poll())) == 1
    shard = tmp_path / "index" / "archive" / shard_name(cid(1))
    line = json.dumps(rec(1, state="purged"), separators=(",", ":")).encode() + b"\n"
    with open(shard, "ab") as fh:
        fh.write(line[:30])
    assert list(follower.poll()) == []
    with open(shard, "ab") as fh:
        fh.write(line[30:])
    assert [c for c, _ in follower.poll()] == [cid(1)]


def test_line_clip_id_without_parsing_and_when_ambiguous() -> None:
    assert line_clip_id(json.dumps(rec(3), separators=(",", ":")).encode()) == cid(3)
    nested = {"clip_id": cid(4), "extra": {"clip_id": "x"}}
    assert line_clip_id(json.dumps(nested, separators=(",", ":")).encode()) == cid(4)
    assert line_clip_id(b'{"clip_id":"torn') is None


JOURNAL_OPS = ["put", "put", "update", "batch", "remove"]


def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "index" / "active.journal"


def test_a_put_is_one_fsynced_journal_line_not_a_rewrite(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1))
    index.put(rec(2))
    index.update(cid(1), state="synced")
    index.put_many([rec(3), rec(4, bay=2)])
    index.archive(cid(2))
    lines = journal_path(tmp_path).read_bytes().splitlines()
    assert [json.loads(line)["op"] for line in lines] == JOURNAL_OPS
    assert not (tmp_path / "index" / "active.json").exists()
    again = ClipIndex(tmp_path)
    assert {r["clip_id"] for r in again.active()} == {cid(1), cid(3), cid(4)}
    assert again.get(cid(1))["state"] == "synced"  # type: ignore[index]


def test_torn_journal_line_is_ignored_then_cut(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1))
    whole = journal_path(tmp_path).read_bytes()
    torn = json.dumps(
        {"op": "batch", "ops": [{"op": "put", "r": rec(2)}, {"op": "put", "r": rec(3)}]}
    )
    with open(journal_path(tmp_path), "ab") as fh:
        fh.write(torn[:-20].encode())  # a crash mid-append: never acknowledged
    again = ClipIndex(tmp_path)
    assert [r["clip_id"] for r in again.active()] == [cid(1)]  # the batch is all or nothing
    again.put(rec(4))
    data = journal_path(tmp_path).read_bytes()
    assert data.startswith(whole) and data.count(b"\n") == 2
    assert {r["clip_id"] for r in ClipIndex(tmp_path).active()} == {cid(1), cid(4)}


def test_a_damaged_journal_line_is_named(tmp_path: Path, index: ClipIndex) -> None:
    index.put(rec(1))
    with open(journal_path(tmp_path), "ab") as fh:
        fh.write(b'{"op": "put", "r": {"clip\n')
    with pytest.raises(IndexCorrupt, match="active.journal"):
        ClipIndex(tmp_path)


def test_crash_between_snapshot_and_truncate_replays_harmlessly(
    tmp_path: Path, index: ClipIndex
) -> None:
    for n in range(5):
        index.put(rec(n))
    index.update(cid(1), state="synced", flags=["a"])
    index.archive(cid(2))
    index.put(rec(2, bay=9))  # the same clip again, after its removal
    index.update(cid(3), flags=["b"])
    index.archive(cid(3))
    journal = journal_path(tmp_path).read_bytes()
    expected = sorted(index.active(), key=str)
    index.compact()
    journal_path(tmp_path).write_bytes(journal)  # as if the truncate never happened
    assert sorted(ClipIndex(tmp_path).active(), key=str) == expected


def test_compaction_when_the_journal_grows(tmp_path: Path) -> None:
    index = ClipIndex(tmp_path, compact_bytes=2000)
    reader = ClipIndex(tmp_path)  # another process following along
    for n in range(20):
        index.put(rec(n))
        assert journal_path(tmp_path).stat().st_size <= 2000 + 1000
        assert len(reader.active()) == n + 1
    assert (tmp_path / "index" / "active.json").exists()
    assert sorted(ClipIndex(tmp_path).active(), key=str) == sorted(index.active(), key=str)


def test_other_processes_follow_across_compactions(tmp_path: Path, index: ClipIndex) -> None:
    cli = ClipIndex(tmp_path)
    index.put(rec(1))
    assert cli.get(cid(1)) is not None
    cli.update(cid(1), held=True)
    cli.close()  # compacts: snapshot replaced, journal emptied
    index.put(rec(2))  # appended over the other process's compaction
    assert index.get(cid(1))["held"] is True  # type: ignore[index]
    assert {r["clip_id"] for r in ClipIndex(tmp_path).active()} == {cid(1), cid(2)}


def test_a_failed_journal_write_changes_nothing(
    tmp_path: Path, index: ClipIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.put(rec(1))

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.durable.os.fsync", full)
    with pytest.raises(OSError):
        index.put(rec(2))
    monkeypatch.undo()
    assert [r["clip_id"] for r in index.active()] == [cid(1)]
    assert [r["clip_id"] for r in ClipIndex(tmp_path).active()] == [cid(1)]


def test_the_daemon_and_the_read_only_snapshot_read_a_journal_alike(tmp_path: Path) -> None:
    from agent.evidence.index.snapshot import IndexSnapshot

    lines = [
        {"op": "put", "r": rec(1)},
        {"op": "batch", "ops": [{"op": "put", "r": rec(2)}, {"op": "put", "r": rec(3)}]},
        {"op": "update", "id": cid(2), "set": {"held": True}},
        {"op": "update", "id": cid(9), "set": {"held": True}},  # not there: nothing happens
        {"op": "remove", "id": cid(3)},
        {"op": "remove", "id": cid(9)},
    ]
    (tmp_path / "index").mkdir()
    journal_path(tmp_path).write_text("".join(json.dumps(op) + "\n" for op in lines))
    snapshot = sorted(IndexSnapshot.read(tmp_path).active(), key=lambda r: r["clip_id"])
    index = ClipIndex(tmp_path)
    try:
        assert sorted(index.active(), key=lambda r: r["clip_id"]) == snapshot
    finally:
        index.close()
    assert {r["clip_id"]: r.get("held") for r in snapshot} == {cid(1): None, cid(2): True}


@pytest.mark.parametrize("op", [{"op": "rename", "id": "x"}, {"op": "put"}, [1, 2]])
def test_both_readers_refuse_an_operation_they_do_not_know(tmp_path: Path, op: object) -> None:
    from agent.evidence.index.snapshot import IndexSnapshot

    (tmp_path / "index").mkdir()
    journal_path(tmp_path).write_text(json.dumps(op) + "\n")
    with pytest.raises(IndexCorrupt, match="active.journal"):
        IndexSnapshot.read(tmp_path)
    with pytest.raises(IndexCorrupt, match="active.journal"):
        ClipIndex(tmp_path)


def test_a_change_that_finishes_a_clip_archives_it_in_the_same_operation(tmp_path: Path) -> None:
    from agent.evidence import lifecycle

    index = ClipIndex(tmp_path)
    try:
        index.put(rec(1, state="offloaded", recorder_deleted=False))
        synced = lifecycle.advance(
            index, cid(1), "after_upstream_ack", **lifecycle.synced("2027-03-01T12:00:00+00:00")
        )
        assert synced["state"] == "synced" and [r["clip_id"] for r in index.active()] == [cid(1)]
        freed = lifecycle.advance(index, cid(1), "after_upstream_ack", **lifecycle.freed())
        assert freed["recorder_deleted"] is True
        assert index.active() == []  # finished: archived by the same call
        assert index.get(cid(1)) == freed
    finally:
        index.close()
    again = ClipIndex(tmp_path)
    try:
        assert again.active() == [] and again.get(cid(1)) == freed
    finally:
        again.close()


def test_update_many_is_one_journal_line_for_active_clips_and_a_version_for_archived(
    tmp_path: Path, index: ClipIndex
) -> None:
    for n in range(3):
        index.put(rec(n))
    index.archive(cid(2))
    before = journal_path(tmp_path).read_bytes()
    index.update_many(
        {cid(0): {"analysed": True, "width": 8}, cid(1): {"analysed": True}, cid(2): {"x": 1}}
    )
    added = journal_path(tmp_path).read_bytes()[len(before) :].splitlines()
    assert [json.loads(line)["op"] for line in added] == ["batch"]
    again = ClipIndex(tmp_path)
    assert again.get(cid(0))["width"] == 8 and again.get(cid(1))["analysed"]  # type: ignore[index]
    assert again.get(cid(2))["x"] == 1  # type: ignore[index]
    assert [r["clip_id"] for r in again.active()] == [cid(0), cid(1)]


def test_a_failed_update_many_changes_none_of_its_clips(
    tmp_path: Path, index: ClipIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.put_many([rec(1), rec(2)])

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.durable.os.fsync", full)
    with pytest.raises(OSError):
        index.update_many({cid(1): {"analysed": True}, cid(2): {"analysed": True}})
    monkeypatch.undo()
    for reader in (index, ClipIndex(tmp_path)):
        assert [r.get("analysed") for r in reader.active()] == [None, None]


def test_get_many_answers_as_get_does_for_each_clip(index: ClipIndex) -> None:
    for n in range(6):
        index.put(rec(n, state="synced"))
    for n in range(3):
        index.archive(cid(n))
    index.update(cid(1), state="purged")  # an archived clip's latest version
    asked = [cid(n) for n in range(8)]  # 6 and 7 were never indexed
    found = index.get_many(asked)
    assert found == {c: index.get(c) for c in asked if index.get(c) is not None}
    assert set(found) == {cid(n) for n in range(6)}
    assert found[cid(1)]["state"] == "purged" and found[cid(4)]["state"] == "synced"
    found[cid(4)]["state"] = "changed"  # copies, as get() returns
    assert index.get(cid(4))["state"] == "synced"  # type: ignore[index]
