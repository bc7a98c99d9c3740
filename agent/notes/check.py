"""Notes against the custody log: what notes.json holds that custody never logged (pure).

`NotesStore.create()`/`explain()` save notes.json before they append `note_created` /
`note_explained`; a crash in between leaves a note or an explanation without its entry.
`dock-agent verify` reports these (`notes_cross_check`); the daemon appends them at
start-up, marked `recovered` (`NotesStore.reconcile`, from `unlogged`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.notes.model import Explanation, Note

NOTE_EVENTS = frozenset({"note_created", "note_explained"})
# What a note_created entry carries so that a note notes.json lost can be restored from it.
RESTORE_FIELDS = frozenset(
    {"note_id", "type", "device_id", "clips", "start", "end", "duration_s", "cause", "created_at"}
)


@dataclass(frozen=True)
class Logged:
    """One custody entry about a note, reduced to what the check needs."""

    seq: Any
    event: str
    note_id: str
    author: str = ""
    text: str = ""
    ts: str = ""
    fields: tuple[tuple[str, Any], ...] = ()  # a note_created entry's fields, to restore from


@dataclass
class NoteLog:
    """The custody log's note entries, by note id, in log order."""

    created: dict[str, list[Logged]] = field(default_factory=dict)
    explained: dict[str, list[Logged]] = field(default_factory=dict)

    def note_ids(self) -> set[str]:
        """Every note id some entry names."""
        return set(self.created) | set(self.explained)


@dataclass(frozen=True)
class Unlogged:
    """What the custody log lacks of one stored note."""

    note: Note
    created: bool  # True when the note has no note_created entry
    explanations: tuple[Explanation, ...]  # explanations without a note_explained entry, in order
    logged: int  # note_explained entries found for the note

    @property
    def empty(self) -> bool:
        """Nothing of the note is missing."""
        return not self.created and not self.explanations


def note_log(entries: Iterable[Mapping[str, Any]]) -> NoteLog:
    """The `note_created` / `note_explained` entries of a custody log, in one pass."""
    log = NoteLog()
    for entry in entries:
        event = entry.get("event")
        if event not in NOTE_EVENTS:
            continue
        note_id = str(entry.get("note_id"))
        found = Logged(
            entry.get("seq"),
            str(event),
            note_id,
            str(entry.get("author", "")),
            str(entry.get("text", "")),
            str(entry.get("explained_at") or entry.get("ts", "")),
            tuple((k, v) for k, v in entry.items() if k in RESTORE_FIELDS),
        )
        target = log.created if event == "note_created" else log.explained
        target.setdefault(note_id, []).append(found)
    return log


def _match(note: Note, logged: list[Logged]) -> tuple[tuple[Explanation, ...], list[Logged]]:
    """(explanations no entry matches, entries no explanation matches), by author and text."""
    by_content: dict[tuple[str, str], deque[int]] = {}
    for at, entry in enumerate(logged):
        by_content.setdefault((entry.author, entry.text), deque()).append(at)
    missing = []
    for explanation in note.explanations:
        queue = by_content.get((explanation.author, explanation.text))
        if queue:
            queue.popleft()
        else:
            missing.append(explanation)
    left = sorted(at for queue in by_content.values() for at in queue)
    return tuple(missing), [logged[at] for at in left]


def unlogged(log: NoteLog, notes: Iterable[Note]) -> list[Unlogged]:
    """For each note the log is missing something of: what, in the order of `notes`."""
    gaps = []
    for note in notes:
        logged = log.explained.get(note.note_id, [])
        missing, _ = _match(note, logged)
        gap = Unlogged(note, note.note_id not in log.created, missing, len(logged))
        if not gap.empty:
            gaps.append(gap)
    return gaps


def _gap_problems(gap: Unlogged) -> list[str]:
    """The sentences for one note's missing entries."""
    name = f"note {gap.note.note_id}"
    problems = []
    if gap.created:
        problems.append(f"{name}: no note_created custody entry")
    if gap.explanations:
        problems.append(
            f"{name}: {len(gap.explanations)} of its {len(gap.note.explanations)} explanations "
            f"have no note_explained custody entry ({gap.logged} logged for it)"
        )
    return problems


def _entry_problems(log: NoteLog, notes: dict[str, Note], horizon: float) -> list[str]:
    """Entries up to seq `horizon` for notes notes.json lacks, or explanations it lacks."""
    found: list[tuple[Logged, str]] = []
    for note_id in log.note_ids() - set(notes):
        for entry in log.created.get(note_id, []) + log.explained.get(note_id, []):
            found.append(
                (entry, f"{entry.event} for note {note_id}, which notes.json does not hold")
            )
    for note_id, logged in log.explained.items():
        if note_id in notes:
            for entry in _match(notes[note_id], logged)[1]:
                what = f"by {entry.author} matches no explanation of it in notes.json"
                found.append((entry, f"note_explained for note {note_id} {what}"))
    found = [item for item in found if _order(item[0].seq) <= horizon]
    found.sort(key=lambda item: (_order(item[0].seq), item[1]))
    return [f"custody seq {entry.seq}: {text}" for entry, text in found]


def _order(seq: Any) -> int:
    """Sort key for a seq that may not be an int."""
    return seq if isinstance(seq, int) else -1


def notes_cross_check(
    entries: Iterable[Mapping[str, Any]], notes: Iterable[Note], horizon: int | None = None
) -> list[str]:
    """Each disagreement between the custody log's note entries and the stored notes.

    A note without `note_created`; a note with explanations no `note_explained` entry
    logs (with the counts); a note entry (by seq, up to `horizon`: later entries are
    newer than the notes read) for a note notes.json does not hold, or for an
    explanation it does not hold.
    """
    log = note_log(entries)
    stored = {note.note_id: note for note in notes}
    problems = [p for gap in unlogged(log, stored.values()) for p in _gap_problems(gap)]
    limit = float("inf") if horizon is None else horizon
    return problems + _entry_problems(log, stored, limit)


def restorable(log: NoteLog, notes: Mapping[str, Note]) -> list[Note]:
    """Notes as custody recorded them where notes.json lost them (or lost explanations).

    A note whose `note_created` entry carries every field is rebuilt; explanations that
    custody logged and the stored note lacks are appended in log order. Older entries
    without the fields cannot be restored (verify keeps reporting them).
    """
    from agent.notes.model import Explanation, Note

    found = []
    for note_id in sorted(log.note_ids()):
        note = notes.get(note_id)
        if note is None:
            fields = dict(log.created.get(note_id, [Logged(None, "", note_id)])[0].fields)
            if not RESTORE_FIELDS <= set(fields):
                continue
            note = Note.from_json({**fields, "explanations": []})
        _, extra = _match(note, log.explained.get(note_id, []))
        added = tuple(Explanation(e.author, e.text, e.ts) for e in extra)
        if added or note_id not in notes:
            found.append(replace(note, explanations=(*note.explanations, *added)))
    return found
