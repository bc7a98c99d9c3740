"""Whether a remote command may run (SPEC 6, 11): pure checks, decided before anything is written.

Commands and their JSON object payloads (no other fields are accepted):

- `note`   {"note_id": str, "author": str, "text": str}: append an explanation to a note;
- `resync` {"clip_id": sha256-hex}: send a clip upstream again;
- `hold`   {"clip_id": sha256-hex, "reason": str, "release": false (optional)}: keep the local
  copy past retention; a release is refused here (SPEC 11: only from the local CLI);
- `assign` {"bay": int, "officer": str, "name": str, "unit": str}: bind the zfy recorder in a
  bay to an officer (agent/dock/assign.py; name and unit optional);
- `ping`   {} (or an empty payload).

`admit` checks the form (no lookups, cheap enough for the network thread); `check_possible`
checks the command against what exists on this dock (`Known`); `decide` is both.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

MAX_PAYLOAD = 64 * 1024
MAX_BY = 200  # the name the sender claims goes into the custody log
SHA256_RE = re.compile(r"[0-9a-f]{64}")
RELEASE_REFUSED = (
    "hold: a release is not accepted over MQTT; release a hold at the dock with "
    "`dock-agent hold CLIP_ID --release --reason ...`"
)


class Field(NamedTuple):
    """One payload field: its type, whether it must be there, and its longest string."""

    kind: type
    required: bool = True
    max_len: int = 0  # strings only; 0 = bounded by MAX_PAYLOAD alone


SCHEMAS: dict[str, dict[str, Field]] = {
    "note": {
        "note_id": Field(str, max_len=128),
        "author": Field(str, max_len=MAX_BY),
        "text": Field(str),
    },
    "resync": {"clip_id": Field(str)},
    "hold": {
        "clip_id": Field(str),
        "reason": Field(str, max_len=2000),
        "release": Field(bool, required=False),
    },
    "assign": {
        "bay": Field(int),
        "officer": Field(str, max_len=128),
        "name": Field(str, required=False, max_len=128),
        "unit": Field(str, required=False, max_len=128),
    },
    "ping": {},
}


class CommandError(Exception):
    """A command refused, with the message its sender reads."""


class ClipFacts(NamedTuple):
    """What commands need to know of a clip."""

    state: str  # for display (agent.evidence.lifecycle.STATES)
    local_copy: bool  # the dock still holds the clip's bytes (not purged, and the file is there)


class Known(Protocol):
    """What exists on this dock, as far as commands refer to it (read-only lookups)."""

    def note_exists(self, note_id: str) -> bool:
        """True when a note with this id is stored."""
        ...

    def clip(self, clip_id: str) -> ClipFacts | None:
        """The clip's facts, None when this dock has no such clip."""
        ...

    def resync_room(self, clip_id: str) -> bool:
        """True when a resync of this clip can be queued (or is queued already)."""
        ...


@dataclass(frozen=True)
class Command:
    """A well-formed command: its name, checked payload and the sender's claimed name."""

    name: str
    payload: dict[str, Any]
    claimed_by: str | None  # what the sender says it is; the broker proves nothing of it

    @property
    def key(self) -> tuple[str, str]:
        """Identical commands share a key (a duplicate while queued is run once)."""
        return self.name, json.dumps(self.payload, sort_keys=True, ensure_ascii=False)


def parse_payload(raw: bytes) -> dict[str, Any]:
    """The command's JSON object, or CommandError saying what is wrong."""
    if len(raw) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(raw)} bytes exceeds the limit of {MAX_PAYLOAD}")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandError(f"payload is not UTF-8 JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
    return data


def check_fields(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check `payload` against the command's fields; return it or raise CommandError."""
    schema = SCHEMAS.get(name)
    if schema is None:
        shown = name if len(name) <= 64 else name[:64] + "..."
        raise CommandError(f"unknown command {shown!r}; known: {', '.join(sorted(SCHEMAS))}")
    unknown = sorted(set(payload) - set(schema))
    if unknown:
        listed = ", ".join(k[:64] for k in unknown[:8])
        raise CommandError(f"{name}: unexpected field(s) {listed}")
    for key, field in schema.items():
        if key in payload:
            _check_value(name, key, field, payload[key])
        elif field.required:
            raise CommandError(f"{name}: missing field {key!r} ({field.kind.__name__})")
    if "clip_id" in payload and not SHA256_RE.fullmatch(payload["clip_id"]):
        raise CommandError(f"{name}: clip_id must be the clip's SHA-256 (64 lowercase hex)")
    if name == "hold" and payload.get("release") is True:
        raise CommandError(RELEASE_REFUSED)
    return payload


def _check_value(name: str, key: str, field: Field, value: Any) -> None:
    # bool is an int: isinstance alone would take true for a number field
    if not isinstance(value, field.kind) or (field.kind is not bool and isinstance(value, bool)):
        raise CommandError(
            f"{name}: field {key!r} must be {field.kind.__name__}, not {value!r:.40}"
        )
    if isinstance(value, str):
        if not value.strip():
            raise CommandError(f"{name}: field {key!r} must not be empty")
        if field.max_len and len(value) > field.max_len:
            raise CommandError(f"{name}: field {key!r} is longer than {field.max_len} characters")


def admit(name: str, raw: bytes, claimed_by: str | None) -> Command:
    """A well-formed command from a topic's last level, raw payload and claimed sender name."""
    payload = check_fields(name, parse_payload(raw))
    if claimed_by is not None and len(claimed_by) > MAX_BY:
        raise CommandError(f"{name}: sender name ('by') is longer than {MAX_BY} characters")
    return Command(name, payload, claimed_by)


def check_possible(cmd: Command, known: Known) -> None:
    """Raise CommandError when the command refers to something this dock lacks."""
    if cmd.name == "note":
        note_id = cmd.payload["note_id"]
        if not known.note_exists(note_id):
            raise CommandError(f"note: no note {note_id!r} on this dock")
    elif cmd.name in ("resync", "hold"):
        _check_clip(cmd.name, cmd.payload["clip_id"], known)


def _check_clip(name: str, clip_id: str, known: Known) -> None:
    facts = known.clip(clip_id)
    if facts is None:
        raise CommandError(f"{name}: no clip {clip_id} on this dock")
    if not facts.local_copy:
        raise CommandError(f"{name}: the local copy of clip {clip_id[:12]} was already purged")
    if name == "resync" and not known.resync_room(clip_id):
        raise CommandError("resync: too many clips are waiting to be resent; try again later")


def decide(name: str, raw: bytes, claimed_by: str | None, known: Known) -> Command:
    """The command to run, or CommandError naming the problem; nothing is written either way."""
    cmd = admit(name, raw, claimed_by)
    check_possible(cmd, known)
    return cmd
