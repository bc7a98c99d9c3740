"""Timeline notes as data: drafts policy proposes, stored notes, people's explanations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NOTE_TYPES = frozenset(
    {
        "gap",
        "interruption",
        "overlap",
        "late_offload",
        "clock_corrected",
        "truncated",
        "device_fault",
    }
)


@dataclass(frozen=True)
class NoteDraft:
    """A note as policy proposes it, before it is stored."""

    type: str
    device_id: str
    start: datetime  # aware, true time
    end: datetime
    cause: str = "unknown"
    clips: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        """Seconds from start to end."""
        return round((self.end - self.start).total_seconds(), 3)

    @property
    def note_id(self) -> str:
        """The stable id: the same draft always gets the same id."""
        key = "|".join([self.type, self.device_id, iso_utc(self.start), ",".join(self.clips)])
        return "N-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Explanation:
    """One person's explanation of a note."""

    author: str
    text: str
    ts: str


@dataclass(frozen=True)
class Note:
    """A stored note (SPEC 3 `notes list --json`)."""

    note_id: str
    type: str
    device_id: str
    start: str
    end: str
    duration_s: float
    cause: str
    clips: tuple[str, ...]
    created_at: str
    explanations: tuple[Explanation, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The note as SPEC 3 prints it."""
        return {
            "note_id": self.note_id,
            "type": self.type,
            "device_id": self.device_id,
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration_s,
            "cause": self.cause,
            "clips": list(self.clips),
            "created_at": self.created_at,
            "explanations": [vars(e).copy() for e in self.explanations],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Note:
        """A note from its JSON form."""
        explanations = tuple(Explanation(**e) for e in obj.get("explanations", []))
        fields = {k: obj[k] for k in ("note_id", "type", "device_id", "start", "end", "cause")}
        return cls(
            **fields,
            duration_s=float(obj["duration_s"]),
            clips=tuple(obj["clips"]),
            created_at=obj["created_at"],
            explanations=explanations,
        )


def iso_utc(ts: datetime) -> str:
    """ISO 8601 with offset, UTC."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")


def required(name: str, value: object) -> str:
    """A non-empty string, else ValueError naming the field."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must not be empty")
    return value.strip()


def check_draft(draft: NoteDraft) -> None:
    """Refuse drafts that would make a note nobody can read."""
    if draft.type not in NOTE_TYPES:
        raise ValueError(f"type: {draft.type!r} is not one of {', '.join(sorted(NOTE_TYPES))}")
    required("device_id", draft.device_id)
    for name in ("start", "end"):
        if getattr(draft, name).tzinfo is None:
            raise ValueError(f"{name}: expected an aware datetime (true time)")
    if draft.end < draft.start:
        raise ValueError("end: expected a time not before start")


def note_from(draft: NoteDraft, created_at: str) -> Note:
    """The stored form of a draft."""
    return Note(
        note_id=draft.note_id,
        type=draft.type,
        device_id=draft.device_id,
        start=iso_utc(draft.start),
        end=iso_utc(draft.end),
        duration_s=draft.duration_s,
        cause=draft.cause or "unknown",
        clips=tuple(draft.clips),
        created_at=created_at,
    )
