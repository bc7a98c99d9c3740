"""Notes against custody entries, as plain lists: what verify reports and reconcile repairs."""

from __future__ import annotations

from typing import Any

from agent.notes.check import note_log, notes_cross_check, unlogged
from agent.notes.model import Explanation, Note


def note(note_id: str, *explained: tuple[str, str]) -> Note:
    """A stored note with explanations given as (author, text)."""
    return Note(
        note_id=note_id,
        type="gap",
        device_id="ZFY0012345",
        start="2026-11-21T01:00:02.000+00:00",
        end="2026-11-21T01:01:32.000+00:00",
        duration_s=90.0,
        cause="low_battery",
        clips=("a" * 64,),
        created_at="2026-11-21T02:00:00.000+00:00",
        explanations=tuple(
            Explanation(a, t, "2026-11-21T03:00:00.000+00:00") for a, t in explained
        ),
    )


def created(seq: int, note_id: str, **extra: Any) -> dict[str, Any]:
    return {"seq": seq, "event": "note_created", "note_id": note_id, **extra}


def explained(seq: int, note_id: str, author: str, text: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "event": "note_explained",
        "note_id": note_id,
        "author": author,
        "text": text,
    }


def test_notes_and_entries_that_agree_have_no_problems() -> None:
    entries = [
        {"seq": 1, "event": "docked", "device_id": "ZFY0012345"},
        created(2, "N-1"),
        explained(3, "N-1", "王", "battery ran out"),
        created(4, "N-2"),
    ]
    notes = [note("N-1", ("王", "battery ran out")), note("N-2")]
    assert notes_cross_check(entries, notes) == []
    assert notes_cross_check([], []) == []


def test_a_note_without_its_created_entry() -> None:
    assert notes_cross_check([created(1, "N-1")], [note("N-1"), note("N-2")]) == [
        "note N-2: no note_created custody entry"
    ]


def test_a_note_with_more_explanations_than_entries_names_the_counts() -> None:
    entries = [created(1, "N-1"), explained(2, "N-1", "王", "one")]
    notes = [note("N-1", ("王", "one"), ("李", "two"), ("李", "three"))]
    assert notes_cross_check(entries, notes) == [
        "note N-1: 2 of its 3 explanations have no note_explained custody entry (1 logged for it)"
    ]


def test_entries_for_a_note_notes_json_does_not_hold_name_the_seq() -> None:
    entries = [created(7, "N-9"), created(8, "N-1"), explained(9, "N-9", "王", "x")]
    assert notes_cross_check(entries, [note("N-1")]) == [
        "custody seq 7: note_created for note N-9, which notes.json does not hold",
        "custody seq 9: note_explained for note N-9, which notes.json does not hold",
    ]


def test_an_explanation_entry_notes_json_lost_is_reported() -> None:
    entries = [created(1, "N-1"), explained(2, "N-1", "王", "one"), explained(3, "N-1", "李", "x")]
    assert notes_cross_check(entries, [note("N-1", ("王", "one"))]) == [
        "custody seq 3: note_explained for note N-1 by 李 matches no explanation of it in notes.json"
    ]


def test_unlogged_names_the_missing_explanations_in_order() -> None:
    # The crash hit the second explanation; a third was logged after the restart.
    entries = [created(1, "N-1"), explained(2, "N-1", "王", "one"), explained(3, "N-1", "王", "3")]
    stored = note("N-1", ("王", "one"), ("李", "two"), ("王", "3"), ("张", "four"))
    gaps = unlogged(note_log(entries), [stored])
    assert len(gaps) == 1 and not gaps[0].created and gaps[0].logged == 2
    assert [(e.author, e.text) for e in gaps[0].explanations] == [("李", "two"), ("张", "four")]


def test_the_same_explanation_twice_needs_two_entries() -> None:
    entries = [created(1, "N-1"), explained(2, "N-1", "王", "same")]
    stored = note("N-1", ("王", "same"), ("王", "same"))
    [gap] = unlogged(note_log(entries), [stored])
    assert [e.text for e in gap.explanations] == ["same"]


def test_recovered_entries_count_like_any_other() -> None:
    entries = [
        created(1, "N-1", recovered=True),
        {**explained(2, "N-1", "王", "one"), "recovered": True},
    ]
    notes = [note("N-1", ("王", "one"))]
    assert notes_cross_check(entries, notes) == []
    assert unlogged(note_log(entries), notes) == []


def test_a_note_missing_everything_is_one_gap() -> None:
    [gap] = unlogged(note_log([]), [note("N-1", ("王", "one"))])
    assert gap.created and [e.text for e in gap.explanations] == ["one"] and gap.logged == 0
    assert notes_cross_check([], [note("N-1", ("王", "one"))]) == [
        "note N-1: no note_created custody entry",
        "note N-1: 1 of its 1 explanations have no note_explained custody entry (0 logged for it)",
    ]
