"""A crash between saving notes.json and logging custody: verify reports it, start-up repairs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.config import DockConfig
from agent.evidence.custody import CustodyLog, iter_entries, verify_chain
from agent.notes.store import NotesStore
from tests.dock import config_toml, dock_config, running, wait_for
from tests.test_notes import GAP


class PowerCut:
    """The real custody log, except that the power goes before `event` is appended."""

    def __init__(self, log: CustodyLog, event: str) -> None:
        self.log = log
        self.event = event

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if event == self.event:
            raise OSError(f"power cut before {event} reached the custody log")
        return self.log.append(event, **fields)


@pytest.fixture
def cfg(tmp_path: Path) -> DockConfig:
    cfg = dock_config(tmp_path)
    (tmp_path / "dock.toml").write_text(config_toml(cfg), encoding="utf-8")
    cfg.data_dir.mkdir(parents=True)
    return cfg


@pytest.fixture
def log(cfg: DockConfig) -> Iterator[CustodyLog]:
    log = CustodyLog(cfg.data_dir / "custody.jsonl")
    log.append("docked", device_id="ZFY0012345", bay=1)
    yield log
    log.close()


def verify(cfg: DockConfig, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit code and MISMATCH lines of `dock-agent verify`."""
    code = main(["verify", "-c", str(cfg.data_dir.parent / "dock.toml")])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MISMATCH")]
    return code, lines


def entries(cfg: DockConfig) -> list[dict[str, Any]]:
    return list(iter_entries(cfg.data_dir / "custody.jsonl"))


def test_a_note_saved_but_never_logged_is_reported_then_recovered_at_start(
    cfg: DockConfig, log: CustodyLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(OSError, match="power cut"):
        NotesStore(cfg.data_dir, PowerCut(log, "note_created")).create(GAP)
    log.close()

    assert verify(cfg, capsys) == (
        1,
        [f"MISMATCH notes vs custody: note {GAP.note_id}: no note_created custody entry"],
    )

    with running(cfg) as (daemon, _views):
        reconciler = daemon.parts.notes_reconciler
        wait_for(reconciler.done.is_set, 10, "notes reconciled with custody")
        assert reconciler.appended == 1

    *_, recovered = entries(cfg)
    assert {k: v for k, v in recovered.items() if k not in ("seq", "ts", "prev", "hash")} == {
        "event": "note_created",
        "note_id": GAP.note_id,
        "type": "gap",
        "device_id": GAP.device_id,
        "clips": list(GAP.clips),
        "start": "2026-11-21T01:00:02.000+00:00",
        "end": "2026-11-21T01:01:32.000+00:00",
        "duration_s": 90.0,
        "cause": GAP.cause,
        "created_at": recovered["created_at"],
        "recovered": True,
    }
    assert verify_chain(cfg.data_dir / "custody.jsonl") == []
    assert verify(cfg, capsys) == (0, [])


def test_a_lost_explanation_is_recovered_with_its_author_and_text_once(
    cfg: DockConfig, log: CustodyLog, capsys: pytest.CaptureFixture[str]
) -> None:
    store = NotesStore(cfg.data_dir, log)
    note_id = store.create(GAP).note_id
    with pytest.raises(OSError, match="power cut"):
        NotesStore(cfg.data_dir, PowerCut(log, "note_explained")).explain(
            note_id, "王警官", "电池耗尽"
        )
    store.explain(note_id, "李队长", "已核实")  # after the restart: logged as usual

    assert verify(cfg, capsys) == (
        1,
        [
            f"MISMATCH notes vs custody: note {note_id}: 1 of its 2 explanations have no "
            "note_explained custody entry (1 logged for it)"
        ],
    )

    path = cfg.data_dir / "custody.jsonl"
    assert store.reconcile(iter_entries(path)) == 1
    recovered = entries(cfg)[-1]
    assert recovered["event"] == "note_explained" and recovered["recovered"] is True
    assert (recovered["note_id"], recovered["author"], recovered["text"]) == (
        note_id,
        "王警官",
        "电池耗尽",
    )
    assert store.reconcile(iter_entries(path)) == 0
    events = [(e["event"], e.get("author"), e.get("recovered")) for e in entries(cfg)]
    assert events == [
        ("docked", None, None),
        ("note_created", None, None),
        ("note_explained", "李队长", None),
        ("note_explained", "王警官", True),
    ]
    assert verify_chain(path) == []
    assert verify(cfg, capsys) == (0, [])


def test_a_note_notes_json_lost_is_reported_then_restored_from_custody(
    cfg: DockConfig, log: CustodyLog, capsys: pytest.CaptureFixture[str]
) -> None:
    """Custody is the record: a note (and explanation) a power cut took from notes.json returns."""
    store = NotesStore(cfg.data_dir, log)
    store.create(GAP)
    note = store.explain(GAP.note_id, "李四", "battery swapped at 09:14")
    (cfg.data_dir / "notes.json").unlink()

    assert verify(cfg, capsys) == (
        1,
        [
            f"MISMATCH notes vs custody: custody seq 2: note_created for note {GAP.note_id}, "
            "which notes.json does not hold",
            f"MISMATCH notes vs custody: custody seq 3: note_explained for note {GAP.note_id}, "
            "which notes.json does not hold",
        ],
    )
    again = NotesStore(cfg.data_dir, log)
    assert again.reconcile(iter_entries(cfg.data_dir / "custody.jsonl")) == 1
    assert len(entries(cfg)) == 3, "restoring appends nothing to custody"
    restored = again.get(GAP.note_id)
    assert restored is not None and restored.to_json() == note.to_json()
    assert verify(cfg, capsys) == (0, [])


def test_an_old_entry_without_the_note_fields_is_reported_not_repaired(
    cfg: DockConfig, log: CustodyLog, capsys: pytest.CaptureFixture[str]
) -> None:
    log.append("note_created", note_id=GAP.note_id, type="gap", device_id="ZFY0012345", clips=[])
    store = NotesStore(cfg.data_dir, log)
    assert store.reconcile(iter_entries(cfg.data_dir / "custody.jsonl")) == 0
    code, lines = verify(cfg, capsys)
    assert code == 1 and "which notes.json does not hold" in lines[0]


def test_notes_wait_while_reconcile_reads_the_log(cfg: DockConfig, log: CustodyLog) -> None:
    """A note created while the log is read must not look unlogged (and be logged twice)."""
    store = NotesStore(cfg.data_dir, log)
    creator = threading.Thread(target=store.create, args=(GAP,))

    def reading() -> Iterator[dict[str, Any]]:
        creator.start()
        time.sleep(0.2)  # no-event wait: create() must still be waiting for the log's reader
        assert creator.is_alive(), "create() ran while reconcile was reading the log"
        yield from iter_entries(cfg.data_dir / "custody.jsonl")

    assert store.reconcile(reading()) == 0
    creator.join(5)
    events = [(e["event"], e.get("recovered")) for e in entries(cfg)]
    assert events == [("docked", None), ("note_created", None)]


def test_a_stopped_daemon_appends_nothing(
    cfg: DockConfig, log: CustodyLog, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.notes.reconcile import NotesReconciler

    with pytest.raises(OSError, match="power cut"):
        NotesStore(cfg.data_dir, PowerCut(log, "note_created")).create(GAP)
    reconciler = NotesReconciler(NotesStore(cfg.data_dir, log), log.path)
    reconciler.stop()  # asked to stop before it read the whole log
    reconciler.start()
    assert reconciler.done.wait(5) and reconciler.appended is None
    assert [e["event"] for e in entries(cfg)] == ["docked"]
