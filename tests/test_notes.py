"""Notes: created once, explanations appended and never rewritten, custody-logged; the CLI."""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.commands import notes as notes_cmd
from agent.evidence.custody import CustodyLog, iter_entries, verify_chain
from agent.notes.model import Note, NoteDraft
from agent.notes.store import NotesCorrupt, NotesStore
from tests.fakes import MemoryCustody

START = datetime(2026, 11, 21, 1, 0, 2, tzinfo=UTC)
GAP = NoteDraft(
    "gap", "ZFY0012345", START, START + timedelta(seconds=90), "low_battery", ("a" * 64, "b" * 64)
)
SPEC_KEYS = {
    "note_id",
    "type",
    "device_id",
    "start",
    "end",
    "duration_s",
    "cause",
    "clips",
    "created_at",
    "explanations",
}


@pytest.fixture
def custody() -> MemoryCustody:
    return MemoryCustody()


@pytest.fixture
def store(tmp_path: Path, custody: MemoryCustody) -> NotesStore:
    return NotesStore(tmp_path, custody)


def stored(tmp_path: Path) -> dict[str, Any]:
    """notes.json as it lies on disk, by note id."""
    doc = json.loads((tmp_path / "notes.json").read_text(encoding="utf-8"))
    return {n["note_id"]: n for n in doc["notes"]}


def test_create_writes_spec_json_and_a_custody_entry(
    store: NotesStore, custody: MemoryCustody, tmp_path: Path
) -> None:
    note = store.create(GAP)
    assert note.note_id.startswith("N-") and len(note.note_id) == 14
    on_disk = stored(tmp_path)[note.note_id]
    assert set(on_disk) == SPEC_KEYS
    assert on_disk["duration_s"] == 90.0 and on_disk["cause"] == "low_battery"
    assert on_disk["start"] == "2026-11-21T01:00:02.000+00:00"
    assert on_disk["clips"] == ["a" * 64, "b" * 64] and on_disk["explanations"] == []
    assert custody.entries == [
        {
            "seq": 1,
            "event": "note_created",
            "note_id": note.note_id,
            "type": "gap",
            "device_id": "ZFY0012345",
            "clips": ["a" * 64, "b" * 64],
            "start": "2026-11-21T01:00:02.000+00:00",
            "end": "2026-11-21T01:01:32.000+00:00",
            "duration_s": 90.0,
            "cause": "low_battery",
            "created_at": note.created_at,
        }
    ]


def test_creating_the_same_note_twice_is_idempotent(
    store: NotesStore, custody: MemoryCustody, tmp_path: Path
) -> None:
    first = store.create(GAP)
    again = NotesStore(tmp_path, custody).create(GAP)
    assert again == first
    assert len(store.list()) == 1 and len(custody.entries) == 1


def test_explanations_append_and_never_rewrite(
    store: NotesStore, custody: MemoryCustody, tmp_path: Path
) -> None:
    note_id = store.create(GAP).note_id
    store.explain(note_id, "Sgt. Li", "battery died on patrol")
    first_on_disk = stored(tmp_path)[note_id]["explanations"][0]
    store.explain(note_id, "Insp. Wang", "confirmed; spare battery issued")
    explanations = stored(tmp_path)[note_id]["explanations"]
    assert explanations[0] == first_on_disk
    assert [(e["author"], e["text"]) for e in explanations] == [
        ("Sgt. Li", "battery died on patrol"),
        ("Insp. Wang", "confirmed; spare battery issued"),
    ]
    assert [e["event"] for e in custody.entries] == [
        "note_created",
        "note_explained",
        "note_explained",
    ]
    assert custody.entries[2] == {
        "seq": 3,
        "event": "note_explained",
        "note_id": note_id,
        "author": "Insp. Wang",
        "text": "confirmed; spare battery issued",
        "explained_at": explanations[1]["ts"],
    }


@pytest.mark.parametrize(("author", "text", "field"), [("", "x", "author"), ("A", " ", "text")])
def test_empty_author_or_text_is_refused(
    store: NotesStore, author: str, text: str, field: str
) -> None:
    note_id = store.create(GAP).note_id
    with pytest.raises(ValueError, match=field):
        store.explain(note_id, author, text)
    assert store.get(note_id) is not None and store.get(note_id).explanations == ()  # type: ignore[union-attr]


def test_unknown_note_is_a_key_error(store: NotesStore) -> None:
    with pytest.raises(KeyError):
        store.explain("N-000000000000", "A", "T")
    assert store.get("N-000000000000") is None


@pytest.mark.parametrize(
    "draft",
    [
        NoteDraft("coffee_break", "D", START, START),
        NoteDraft("gap", "D", START.replace(tzinfo=None), START.replace(tzinfo=None)),
        NoteDraft("gap", "D", START, START - timedelta(seconds=1)),
        NoteDraft("gap", "", START, START),
    ],
)
def test_bad_drafts_are_refused(store: NotesStore, draft: NoteDraft) -> None:
    with pytest.raises(ValueError):
        store.create(draft)
    assert store.list() == []


def test_list_filters_by_device_in_time_order(store: NotesStore) -> None:
    later = NoteDraft(
        "interruption",
        "ZFY0012345",
        START + timedelta(hours=1),
        START + timedelta(hours=1, seconds=5),
        "unknown",
        ("c" * 64,),
    )
    other = NoteDraft("device_fault", "ZFY0099999", START, START)
    store.create(later), store.create(GAP), store.create(other)
    assert [n.type for n in store.list("ZFY0012345")] == ["gap", "interruption"]
    assert len(store.list()) == 3


def test_subscribers_hear_of_new_notes_and_explanations(store: NotesStore) -> None:
    heard: list[tuple[str, Note]] = []
    store.on_change.append(lambda kind, note: heard.append((kind, note)))
    note = store.create(GAP)
    store.create(GAP)  # idempotent: nothing new to tell
    store.explain(note.note_id, "A", "T")
    assert [(k, len(n.explanations)) for k, n in heard] == [("created", 0), ("explained", 1)]


def test_refresh_announces_what_another_process_added(
    store: NotesStore, custody: MemoryCustody, tmp_path: Path
) -> None:
    note_id = store.create(GAP).note_id
    heard: list[str] = []
    store.on_change.append(lambda kind, note: heard.append(kind))
    NotesStore(tmp_path, custody).explain(note_id, "A", "from the CLI")  # e.g. `notes add`
    assert [n.note_id for n in store.refresh()] == [note_id] and heard == ["explained"]
    assert store.refresh() == [] and heard == ["explained"]


def test_concurrent_explanations_all_survive(store: NotesStore, tmp_path: Path) -> None:
    note_id = store.create(GAP).note_id
    other = NotesStore(tmp_path, MemoryCustody())

    def explain(target: NotesStore, n: int) -> None:
        for i in range(5):
            target.explain(note_id, f"author{n}", f"text {i}")

    threads = [
        threading.Thread(target=explain, args=(s, n))
        for n, s in enumerate([store, store, other, other])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stored(tmp_path)[note_id]["explanations"]) == 20


def test_damaged_file_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{half a docu", encoding="utf-8")
    with pytest.raises(NotesCorrupt):
        NotesStore(tmp_path, MemoryCustody())
    assert (tmp_path / "notes.json").read_text(encoding="utf-8") == "{half a docu"


def test_real_custody_log_chains_note_entries(tmp_path: Path) -> None:
    log = CustodyLog(tmp_path / "custody.jsonl")
    store = NotesStore(tmp_path, log)
    store.explain(store.create(GAP).note_id, "A", "T")
    log.close()
    events = [e["event"] for e in iter_entries(tmp_path / "custody.jsonl")]
    assert events == ["note_created", "note_explained"]
    assert verify_chain(tmp_path / "custody.jsonl") == []


# --- the command line -------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "dock.toml"
    data_dir = tmp_path / "data"
    path.write_text(
        f'[dock]\nid = "dock-01"\ndata_dir = "{data_dir}"\n[policy]\ntimezone = "Asia/Shanghai"\n',
        encoding="utf-8",
    )
    return path


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dock-agent")
    notes_cmd.add_parser(parser.add_subparsers(dest="command"))
    return notes_cmd.run(parser.parse_args(argv))


def test_cli_list_add_and_list_again(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = CustodyLog(tmp_path / "data" / "custody.jsonl")
    note_id = NotesStore(tmp_path / "data", log).create(GAP).note_id
    log.close()
    assert cli("notes", "list", "-c", str(config)) == 0
    table = capsys.readouterr().out
    assert note_id in table and "2026-11-21 09:00:02" in table and "1m30s" in table
    assert "low_battery" in table and " no" in table
    assert (
        cli(
            "notes",
            "-c",
            str(config),
            "add",
            note_id,
            "--author",
            "Sgt. Li",
            "--text",
            "battery died",
        )
        == 0
    )
    assert "Sgt. Li" in capsys.readouterr().out
    assert cli("notes", "list", "--json", "-c", str(config)) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert set(listed) == SPEC_KEYS
    assert listed["explanations"][0]["author"] == "Sgt. Li"
    assert verify_chain(tmp_path / "data" / "custody.jsonl") == []


def test_cli_unknown_note_exits_1(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("notes", "add", "N-nope", "--author", "A", "--text", "T", "-c", str(config)) == 1
    assert "N-nope" in capsys.readouterr().err


def test_cli_missing_arguments_exit_2(config: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("notes", "add", "N-x", "--author", "A", "-c", str(config))
    assert exc.value.code == 2


def test_cli_empty_text_exits_2(config: Path, tmp_path: Path) -> None:
    note_id = NotesStore(tmp_path / "data", MemoryCustody()).create(GAP).note_id
    assert cli("notes", "add", note_id, "--author", "A", "--text", "", "-c", str(config)) == 2


def test_cli_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[dock]\nid = "dock 01!"\n', encoding="utf-8")
    assert cli("notes", "list", "-c", str(bad)) == 2
    err = capsys.readouterr().err
    assert "dock.id" in err and "Traceback" not in err


def test_cli_list_without_notes(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("notes", "list", "-c", str(config)) == 0
    assert capsys.readouterr().out.strip() == "no notes"
    assert cli("notes", "list", "--json", "-c", str(config)) == 0
    assert json.loads(capsys.readouterr().out) == []
