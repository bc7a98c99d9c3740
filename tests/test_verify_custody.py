"""`verify` cross-checks custody against the index; central's custody-head extension check."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.evidence.custody import ZERO_HASH, CustodyLog, entry_hash
from agent.evidence.custody_check import chain_extends
from tests.test_export import Dock, open_dock


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[Dock]:
    d = open_dock(tmp_path)
    yield d
    d.custody.close()
    d.index.close()


def verify(dock: Dock, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit code and MISMATCH lines of `dock-agent verify`."""
    code = main(["verify", "-c", str(dock.config)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MISMATCH")]
    return code, lines


def test_consistent_dock_verifies(dock: Dock, capsys: pytest.CaptureFixture[str]) -> None:
    dock.clip("A.MP4", b"a")
    assert verify(dock, capsys) == (0, [])


def test_a_log_with_command_entries_old_and_new_verifies(
    dock: Dock, capsys: pytest.CaptureFixture[str]
) -> None:
    dock.clip("A.MP4", b"a")
    cmd = {"name": "resync", "payload": {"clip_id": "a" * 64}}
    dock.custody.append("command", by="sgt.li", **cmd)  # as logs written before claimed_by
    dock.custody.append("command", claimed_by="sgt.li", **cmd)
    dock.custody.append("command", claimed_by=None, **cmd)
    assert verify(dock, capsys) == (0, [])


def test_index_row_whose_custody_entry_is_missing(
    dock: Dock, capsys: pytest.CaptureFixture[str]
) -> None:
    record = dock.clip("A.MP4", b"a")
    log = dock.cfg.data_dir / "custody.jsonl"
    dock.custody.close()
    log.rename(log.with_name("custody.old"))
    # A fresh, intact chain: the history that held the clip's offload is gone.
    dock.custody = CustodyLog(log)
    dock.custody.append("docked", device_id="ZFY0012345", bay=1)

    code, lines = verify(dock, capsys)
    assert code == 1
    assert lines == [
        f"MISMATCH custody vs index: clip {record['clip_id'][:12]}: its clip_offloaded "
        "custody entry (seq 1) is missing"
    ]


def test_index_row_with_a_different_custody_hash(
    dock: Dock, capsys: pytest.CaptureFixture[str]
) -> None:
    record = dock.clip("A.MP4", b"a")
    dock.index.update(record["clip_id"], custody_hash="f" * 64)
    code, lines = verify(dock, capsys)
    assert code == 1 and len(lines) == 1 and "has hash" in lines[0]


def test_purges_and_deletions_must_match_the_index(
    dock: Dock, capsys: pytest.CaptureFixture[str]
) -> None:
    said_purged = dock.clip("A.MP4", b"a")
    dock.custody.append("local_copy_purged", clip=said_purged["clip_id"], reason="x")
    silently_purged = dock.clip("B.MP4", b"b", state="purged")
    said_deleted = dock.clip("C.MP4", b"c")
    dock.custody.append("recorder_clip_deleted", sha256=said_deleted["clip_id"])
    silently_deleted = dock.clip("D.MP4", b"d", recorder_deleted=True)
    dock.custody.append("exported", clip="e" * 64, operator="x", approval="y", reason="z")

    code, lines = verify(dock, capsys)
    text = "\n".join(lines)
    assert code == 1 and len(lines) == 5, text
    assert (
        f"local_copy_purged for clip {said_purged['clip_id'][:12]}, index state 'offloaded'" in text
    )
    assert f"clip {silently_purged['clip_id'][:12]}: purged in the index but no" in text
    assert f"recorder_clip_deleted of {said_deleted['clip_id'][:12]}, index says not" in text
    assert f"clip {silently_deleted['clip_id'][:12]}: recorder_deleted in the index" in text
    assert f"exported clip {'e' * 12} unknown to the index" in text


# ---- chain_extends --------------------------------------------------------------------------


@pytest.fixture
def entries(tmp_path: Path) -> list[dict[str, object]]:
    log = CustodyLog(tmp_path / "custody.jsonl")
    out = [log.append("docked", device_id=f"ZFY{n}", bay=1) for n in range(6)]
    log.close()
    return out


def head(entry: dict[str, object]) -> tuple[int, str]:
    return int(entry["seq"]), str(entry["hash"])  # type: ignore[call-overload]


def test_a_later_head_that_extends_the_chain(entries: list[dict[str, object]]) -> None:
    assert chain_extends(entries[2:], head(entries[1]), head(entries[5]))
    assert chain_extends(entries[1:], head(entries[1]), head(entries[5]))  # old head included
    assert chain_extends(entries, (0, ZERO_HASH), {"seq": 6, "hash": entries[5]["hash"]})
    assert chain_extends([], head(entries[3]), head(entries[3]))


def test_rewritten_history_is_detected(entries: list[dict[str, object]]) -> None:
    old, new = head(entries[1]), head(entries[5])
    assert not chain_extends(entries[2:], new, old)  # lower seq
    assert not chain_extends([], old, (old[0], "0" * 64))  # other hash at a known seq
    assert not chain_extends(entries[3:], old, new)  # entries missing
    altered = copy.deepcopy(entries)
    altered[3]["device_id"] = "ZFY-OTHER"
    assert not chain_extends(altered[2:], old, new)  # content changed, hash kept
    altered[3]["hash"] = entry_hash(altered[3])
    assert not chain_extends(altered[2:], old, new)  # re-hashed, so the next prev breaks
    assert not chain_extends(entries[2:], (old[0], "f" * 64), new)  # forked before old
