"""Notes on the timeline (gaps, interruptions, ...) that people explain; never rewritten."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agent import durable
from agent.notes.check import Unlogged, note_log, restorable, unlogged
from agent.notes.model import (
    Explanation,
    Note,
    NoteDraft,
    check_draft,
    iso_utc,
    note_from,
    required,
)

logger = logging.getLogger(__name__)

NOTES_FILE = "notes.json"
FORMAT_VERSION = 1


class CustodySink(Protocol):
    """The one thing notes need of the custody log."""

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one custody entry and return it."""
        ...


class NotesCorrupt(Exception):
    """notes.json exists but cannot be read; it is left untouched for a person to look at."""


def _now() -> datetime:
    """The current true time."""
    return datetime.now(UTC)


ChangeCallback = Callable[[str, Note], None]
NoteList = list[Note]


class NotesStore:
    """Notes in `{data_dir}/notes.json`: created once, explanations only ever appended."""

    def __init__(
        self, data_dir: Path, custody: CustodySink, now: Callable[[], datetime] = _now
    ) -> None:
        self._path = Path(data_dir) / NOTES_FILE
        self._lock_path = Path(data_dir) / f".{NOTES_FILE}.lock"
        self._custody = custody
        self._now = now
        self._lock = threading.RLock()
        self._notes: dict[str, Note] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.on_change: list[ChangeCallback] = []  # called with ("created"|"explained", note)
        with self._lock:
            self._reload()
            self._seen = {n.note_id: len(n.explanations) for n in self._notes.values()}

    def create(self, draft: NoteDraft) -> Note:
        """Store a note from a draft; the same draft twice returns the note already stored."""
        check_draft(draft)
        with self._mutating():
            existing = self._notes.get(draft.note_id)
            if existing is not None:
                return existing
            note = note_from(draft, iso_utc(self._now()))
            self._notes[note.note_id] = note
            self._save()
            self._custody.append("note_created", **_created_fields(note))
            self._seen[note.note_id] = 0
        logger.info("note %s created: %s on %s", note.note_id, note.type, note.device_id)
        self._announce("created", note)
        return note

    def explain(self, note_id: str, author: str, text: str) -> Note:
        """Append an explanation by `author`; earlier explanations are never touched."""
        author, text = required("author", author), required("text", text)
        with self._mutating():
            note = self._notes.get(note_id)
            if note is None:
                raise KeyError(note_id)
            entry = Explanation(author=author, text=text, ts=iso_utc(self._now()))
            note = replace(note, explanations=(*note.explanations, entry))
            self._notes[note_id] = note
            self._save()
            self._custody.append("note_explained", **_explained_fields(note_id, entry))
            self._seen[note_id] = len(note.explanations)
        logger.info("note %s explained by %s", note_id, author)
        self._announce("explained", note)
        return note

    def reconcile(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append the custody entries a crash left out, marked `recovered`; how many.

        `entries` is read under the notes lock, so no note is created or explained while
        it is read: pass a lazy reader of the whole log (`agent.evidence.custody.iter_entries`).
        An entry for a note notes.json lacks cannot be repaired (only verify reports it).
        """
        with self._mutating():
            log = note_log(entries)
            restored = self._restore(restorable(log, self._notes))
            notes = sorted(self._notes.values(), key=lambda n: (n.created_at, n.note_id))
            gaps = unlogged(log, notes)
            return restored + sum(self._recover(gap) for gap in gaps)

    def _restore(self, notes: list[Note]) -> int:
        """Put back what custody logged and notes.json lost (a power cut after the log)."""
        for note in notes:
            self._notes[note.note_id] = note
            self._seen[note.note_id] = len(note.explanations)
            logger.warning(
                "note %s: custody logged it but notes.json lost it (or its explanations); "
                "restored from the custody log",
                note.note_id,
            )
        if notes:
            self._save()
        return len(notes)

    def _recover(self, gap: Unlogged) -> int:
        """Log what custody lacks of one note, as create()/explain() would have; how many."""
        note_id = gap.note.note_id
        appended = 0
        if gap.created:
            entry = self._custody.append(
                "note_created", **_created_fields(gap.note), recovered=True
            )
            logger.warning(
                "note %s: no note_created custody entry (interrupted after notes.json was "
                "saved); appended as recovered, seq %s",
                note_id,
                entry.get("seq"),
            )
            appended += 1
        for explanation in gap.explanations:
            fields = _explained_fields(note_id, explanation)
            entry = self._custody.append("note_explained", **fields, recovered=True)
            logger.warning(
                "note %s: explanation by %s (%s) had no note_explained custody entry; "
                "appended as recovered, seq %s",
                note_id,
                explanation.author,
                explanation.ts,
                entry.get("seq"),
            )
            appended += 1
        return appended

    def list(self, device_id: str | None = None) -> NoteList:
        """Notes in time order, optionally of one device."""
        with self._lock:
            self._reload()
            notes = [n for n in self._notes.values() if device_id in (None, n.device_id)]
        return sorted(notes, key=lambda n: (n.start, n.note_id))

    def get(self, note_id: str) -> Note | None:
        """One note by id, or None."""
        with self._lock:
            self._reload()
            return self._notes.get(note_id)

    def refresh(self) -> NoteList:
        """Re-read the file and announce notes created or explained by another process."""
        changed: list[tuple[str, Note]] = []
        with self._lock:
            self._reload()
            for note in self._notes.values():
                seen = self._seen.get(note.note_id)
                if seen is None or len(note.explanations) > seen:
                    changed.append(("created" if seen is None else "explained", note))
                    self._seen[note.note_id] = len(note.explanations)
        for kind, note in changed:
            self._announce(kind, note)
        return [note for _, note in changed]

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Hold the thread lock and the file lock (the CLI writes too), on fresh contents."""
        with self._lock:
            durable.make_dirs(self._path.parent)
            with open(self._lock_path, "a+b") as lock_fh:
                fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX)
                self._reload()
                yield

    def _reload(self) -> None:
        """Read notes.json when it changed since we last read or wrote it."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._notes, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._notes = _read_notes(self._path)
        self._stamp = stamp

    def _save(self) -> None:
        """Write every note atomically and remember the file we wrote."""
        notes = sorted(self._notes.values(), key=lambda n: (n.created_at, n.note_id))
        doc = {"version": FORMAT_VERSION, "notes": [n.to_json() for n in notes]}
        durable.write_json(self._path, doc)
        st = os.stat(self._path)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _announce(self, kind: str, note: Note) -> None:
        """Tell subscribers; a failing subscriber cannot undo a stored note."""
        for callback in list(self.on_change):
            try:
                callback(kind, note)
            except Exception:
                logger.exception("note %s: on_change subscriber failed", note.note_id)


def _created_fields(note: Note) -> dict[str, Any]:
    """The fields of a note's `note_created` custody entry: enough to restore the note."""
    return {
        "note_id": note.note_id,
        "type": note.type,
        "device_id": note.device_id,
        "clips": list(note.clips),
        "start": note.start,
        "end": note.end,
        "duration_s": note.duration_s,
        "cause": note.cause,
        "created_at": note.created_at,
    }


def _explained_fields(note_id: str, explanation: Explanation) -> dict[str, Any]:
    """The fields of an explanation's `note_explained` custody entry (with its own time)."""
    return {
        "note_id": note_id,
        "author": explanation.author,
        "text": explanation.text,
        "explained_at": explanation.ts,
    }


def read_notes(data_dir: Path) -> NoteList:
    """The notes in `{data_dir}/notes.json`, read-only (none without the file); NotesCorrupt."""
    path = Path(data_dir) / NOTES_FILE
    if not path.exists():
        return []
    return sorted(_read_notes(path).values(), key=lambda n: (n.created_at, n.note_id))


def _read_notes(path: Path) -> dict[str, Note]:
    """Parse notes.json; a damaged file raises NotesCorrupt rather than being overwritten."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        notes = [Note.from_json(obj) for obj in doc["notes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotesCorrupt(f"{path}: cannot be read ({exc}); left untouched") from exc
    return {n.note_id: n for n in notes}
