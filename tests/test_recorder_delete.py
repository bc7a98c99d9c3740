"""SPEC 9's delete rule: a recorder file goes only when it is, byte for byte, the acked clip."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

from agent.events import Synced
from agent.evidence.custody import iter_entries, verify_chain
from agent.evidence.index import ClipIndex
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for

REPO = Path(__file__).resolve().parent.parent


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def events(data: Path, *names: str) -> list[dict]:
    return [e for e in iter_entries(data / "custody.jsonl") if e["event"] in names]


def recorder(clips: int = 2) -> simkit.SimRecorder:
    start = datetime.now() - timedelta(hours=2)
    return simkit.SimRecorder(clips=simkit.shift(start, [1] * clips))


def test_each_deletion_is_announced_before_the_unlink_and_confirmed_after(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
    originals = simkit.build(tmp_path / "bay1", recorder())
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
    assert not any(p.exists() for p in originals)
    trail = [
        (e["event"], e["sha256"])
        for e in events(cfg.data_dir, "recorder_clip_deleting", "recorder_clip_deleted")
    ]
    for path in originals:
        digest = sha_of_stored(cfg.data_dir, path.name)
        i = trail.index(("recorder_clip_deleting", digest))
        assert trail[i + 1] == ("recorder_clip_deleted", digest)


def sha_of_stored(data: Path, name: str) -> str:
    index = ClipIndex(data)
    try:
        (row,) = [r for r in index.iter_all() if r["file_name"] == name]
        return str(row["sha256"])
    finally:
        index.close()


def test_a_file_replaced_under_the_acked_name_is_kept_and_offloaded_as_new(
    tmp_path: Path,
) -> None:
    cfg = dock_config(tmp_path)  # after_upstream_ack: nothing goes before the (forged) ack
    (first, _second) = simkit.build(tmp_path / "bay1", recorder())
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to finish")
        old = sha(first)
        new_bytes = first.read_bytes()[::-1]  # other bytes, same size, same name
        first.write_bytes(new_bytes)
        daemon.services.index.update(old, state="synced", synced_at="2026-12-01T00:00:00+00:00")
        device = daemon.services.index.get(old)["device_id"]  # type: ignore[index]
        daemon.services.flow.publish(Synced(old, device))
        new = hashlib.sha256(new_bytes).hexdigest()
        wait_for(lambda: daemon.services.index.get(new), 30, "the new bytes offloaded")
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to settle")
        row = daemon.services.index.get(new)
        assert row is not None and row["file_name"] == first.name
        assert Path(row["local_path"]).read_bytes() == new_bytes
    assert first.read_bytes() == new_bytes, "a file that is not the acked clip is never deleted"
    missing = events(cfg.data_dir, "recorder_clip_missing")
    assert [(e["sha256"], e["reason"], e["found_sha256"]) for e in missing] == [
        (old, "replaced", new)
    ]
    assert not [e for e in events(cfg.data_dir, "recorder_clip_deleted") if e["sha256"] == old]


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from firmware_interface import simulated

    real_delete = simulated.SimulatedRecorder.delete_clip

    def delete_then_lose_power(self, clip):
        real_delete(self, clip)
        os.kill(os.getpid(), signal.SIGKILL)  # after the unlink, before its custody entry

    simulated.SimulatedRecorder.delete_clip = delete_then_lose_power
    from agent.cli import main
    sys.exit(main(["run", "-c", sys.argv[1]]))
    """
)


def test_kill9_between_unlink_and_its_custody_entry_ends_missing_not_stuck(
    tmp_path: Path,
) -> None:
    cfg = dock_config(tmp_path, delete_from_recorder="after_local_verify")
    path = tmp_path / "dock.toml"
    path.write_text(config_toml(cfg))
    (only,) = simkit.build(tmp_path / "bay1", recorder(1))
    digest = sha(only)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=REPO, timeout=120, capture_output=True
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    assert not only.exists()
    assert [e["event"] for e in events(cfg.data_dir, "recorder_clip_deleting")] == [
        "recorder_clip_deleting"
    ]
    assert events(cfg.data_dir, "recorder_clip_deleted") == []
    with running(cfg) as (daemon, views):
        wait_for(lambda: events(cfg.data_dir, "recorder_clip_missing"), 60, "the deletion recorded")
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to settle")
        assert views.latest(1).state != "fault"  # type: ignore[union-attr]
        assert not [f for f in views.latest(1).findings if f.code == "delete_failed"]  # type: ignore[union-attr]
    (missing,) = events(cfg.data_dir, "recorder_clip_missing")
    assert missing["sha256"] == digest
    index = ClipIndex(cfg.data_dir)
    try:
        row = index.get(digest)
        assert row is not None and row["recorder_deleted"] is True
    finally:
        index.close()
    assert verify_chain(cfg.data_dir / "custody.jsonl") == []
    verify = subprocess.run(
        [sys.executable, "-m", "agent", "verify", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert os.listdir(tmp_path / "bay1" / "DCIM" / "100MEDIA") == []
