"""The dock's side of remote commands: what exists (for checks before logging) and the handlers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex
from agent.evidence.lifecycle import has_local_copy, state_of
from agent.evidence.retention.holds import HoldError, set_hold
from agent.mqtt.command_policy import ClipFacts, CommandError
from agent.mqtt.commands import Handler
from agent.notes.store import NotesStore


class DockFacts:
    """Read-only lookups in this dock's notes, clip index and resync queue (`Known`)."""

    def __init__(
        self,
        notes: NotesStore,
        index: ClipIndex,
        resync_room: Callable[[str], bool] = lambda _clip: True,
    ) -> None:
        self._notes = notes
        self._index = index
        self._resync_room = resync_room

    def note_exists(self, note_id: str) -> bool:
        """True when a note with this id is stored."""
        return self._notes.get(note_id) is not None

    def clip(self, clip_id: str) -> ClipFacts | None:
        """The clip's state and whether its local copy is still here."""
        record = self._index.get(clip_id)
        if record is None:
            return None
        path = record.get("local_path")
        here = has_local_copy(record) and isinstance(path, str) and Path(path).is_file()
        return ClipFacts(state_of(record), here)

    def resync_room(self, clip_id: str) -> bool:
        """True when the sync worker can queue one more resync (or has this one queued)."""
        return self._resync_room(clip_id)


def note_handler(notes: NotesStore) -> Handler:
    """The `note` command: append an explanation to a note."""

    def handle(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            note = notes.explain(payload["note_id"], payload["author"], payload["text"])
        except KeyError:
            raise CommandError(f"no note {payload['note_id']!r} on this dock") from None
        return note.to_json()

    return handle


def hold_handler(index: ClipIndex, custody: CustodyLog) -> Handler:
    """The `hold` command: keep a local copy past retention (a release only from the CLI)."""

    def handle(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("release"):  # refused before this; a second lock on the same door
            raise CommandError("a release is not accepted over MQTT")
        try:
            return set_hold(index, custody, payload["clip_id"], payload["reason"], False, "mqtt")
        except HoldError as exc:
            raise CommandError(str(exc)) from None

    return handle
