"""The rules of a clip's life (SPEC 9): may its recorder copy go, is it acked, may its local
copy be purged, is it finished. Every caller asks here; nothing else decides these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.evidence.index import ClipIndex

Record = dict[str, Any]


def acked(record: Record) -> bool:
    """Whether central holds the clip (its fin succeeded) and a local copy is still here."""
    return record.get("state") == "synced"


def purgeable(record: Record) -> bool:
    """Acked, not held: the only clips a purge may ever touch."""
    return acked(record) and not record.get("held")


def acked_upstream(record: Record) -> bool:
    """Whether central ever acknowledged the clip (its local copy may since be purged)."""
    return record.get("state") in ("synced", "purged")


def has_local_copy(record: Record) -> bool:
    """Whether the dock still holds the clip's bytes (not purged after retention)."""
    return record.get("state") != "purged"


def deletable(record: Record, policy: str) -> bool:
    """Whether the recorder's copy of this clip may be deleted under `policy` (SPEC 9)."""
    if policy == "never":
        return False
    if policy == "after_local_verify":
        return record["state"] in ("offloaded", "synced", "purged")
    return acked_upstream(record)


def finished(record: Record, delete_policy: str) -> bool:
    """Nothing left for the live workflow: acked upstream and the recorder copy handled."""
    if not acked_upstream(record):
        return False
    return bool(record.get("recorder_deleted")) or delete_policy == "never"


def archive_if_finished(index: ClipIndex, record: Record, delete_policy: str) -> bool:
    """Move a finished clip from the active set to the archive; True when it is finished."""
    if not finished(record, delete_policy):
        return False
    index.archive(record["clip_id"])
    return True
