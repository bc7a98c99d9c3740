"""The rules of a clip's life (SPEC 9), and the one way its state changes.

A clip moves offloaded -> analysed -> synced -> freed (its recorder copy handled) -> purged
(its local copy gone after retention). This module is the only code that reads a clip's
`state` or `recorder_deleted`: every caller asks here (is it acked, may its recorder copy go,
may its local copy be purged, is it finished), and every state change goes through
`advance`, one index operation that also moves a finished clip to the archive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

Record = dict[str, Any]
Row = Mapping[str, Any]  # a record as read (an index row, a snapshot's, an archive line's)

OFFLOADED = "offloaded"
SYNCED = "synced"
PURGED = "purged"
STATES = (OFFLOADED, SYNCED, PURGED)  # in the order a clip reaches them
SYNCED_LINE = b'"state":"synced"'  # in every compact-JSON line of a record whose state is synced
RECORDER_PENDING: Record = {"recorder_deleted": False}  # index.find: recorder copy not handled


def new_clip() -> Record:
    """The life fields of a clip just offloaded (its record's starting point)."""
    return {"state": OFFLOADED, "recorder_deleted": False, "analysed": False}


def state_of(record: Row) -> str:
    """The clip's state by name, for display and filters (one of STATES)."""
    return str(record.get("state") or OFFLOADED)


def rank(record: Row) -> int:
    """How far the clip has come: 0 offloaded, 1 synced, 2 purged."""
    state = state_of(record)
    return STATES.index(state) if state in STATES else 0


def acked(record: Row) -> bool:
    """Whether central holds the clip (its fin succeeded) and a local copy is still here."""
    return record.get("state") == SYNCED


def proven(record: Row) -> bool:
    """Whether the ack was proved: central's verified receipt, or an authenticated EMQX.

    An ack taken while central's key was not enrolled (SPEC 11, `deletes_held`) proves nothing:
    any broker client could have sent it, so it frees neither the recorder nor the local copy.
    Records from before this field existed were acked under the rules of their day: proven.
    """
    return record.get("ack_proven") is not False


def awaiting_proof(record: Row) -> bool:
    """Acked without proof, local copy still here: to be sent again once receipts can be checked."""
    return record.get("state") == SYNCED and not proven(record)


def purgeable(record: Row) -> bool:
    """Acked with proof, not held: the only clips a purge may ever touch."""
    return acked(record) and proven(record) and not record.get("held")


def acked_upstream(record: Row) -> bool:
    """Whether central ever acknowledged the clip (its local copy may since be purged)."""
    return record.get("state") in (SYNCED, PURGED)


def has_local_copy(record: Row) -> bool:
    """Whether the dock still holds the clip's bytes (not purged after retention)."""
    return record.get("state") != PURGED


def awaiting_sync(record: Row) -> bool:
    """Offloaded and analysed, not yet acked: the next clip sync may send."""
    return record.get("state") == OFFLOADED and bool(record.get("analysed"))


def recorder_handled(record: Row) -> bool:
    """Whether the recorder's copy was deleted or found gone (nothing left to free)."""
    return bool(record.get("recorder_deleted"))


def deletable(record: Row, policy: str) -> bool:
    """Whether the recorder's copy of this clip may be deleted under `policy` (SPEC 9)."""
    if policy == "never":
        return False
    if policy == "after_local_verify":
        return record["state"] in STATES
    return acked_upstream(record) and proven(record)


def finished(record: Row, delete_policy: str) -> bool:
    """Nothing left for the live workflow: acked upstream and the recorder copy handled."""
    if not acked_upstream(record) or not proven(record):
        return False
    return recorder_handled(record) or delete_policy == "never"


# ---- the changes a step makes (pure) -------------------------------------------------------


def synced(synced_at: str | None, proven: bool = True) -> Record:
    """Central acknowledged the clip (`proven`: with a verified receipt or an authenticated EMQX)."""
    return {"state": SYNCED, "synced_at": synced_at, "ack_proven": proven}


def ack_proven() -> Record:
    """An ack taken without proof was proved later (a verified receipt on a resend)."""
    return {"ack_proven": True}


def freed() -> Record:
    """The recorder's copy was deleted, or found gone."""
    return {"recorder_deleted": True}


def purged(purged_at: str | None, reason: str | None, custody_seq: int | None) -> Record:
    """The local copy was removed after retention (custody entry `custody_seq`)."""
    return {
        "state": PURGED,
        "purged_at": purged_at,
        "purge_reason": reason,
        "purge_custody_seq": custody_seq,
    }


# ---- the one way a clip changes ------------------------------------------------------------


class ClipIndex(Protocol):
    """What the life of a clip needs of the index (agent.evidence.index.ClipIndex)."""

    def change(self, clip_id: str, changes: Record, finished: Callable[[Record], bool]) -> Record:
        """Apply `changes`; archive the clip when `finished` says so of the result."""
        ...

    def archive(self, clip_id: str) -> None:
        """Move a finished clip from the active set to the archive."""
        ...


def advance(index: ClipIndex, clip_id: str, delete_policy: str, **changes: Any) -> Record:
    """Apply `changes` to a clip and archive it when that finished it: one index operation."""
    return index.change(clip_id, changes, lambda record: finished(record, delete_policy))


def archive_if_finished(index: ClipIndex, record: Record, delete_policy: str) -> bool:
    """Move an already-finished clip to the archive (start-up tidying); True when finished."""
    if not finished(record, delete_policy):
        return False
    index.archive(record["clip_id"])
    return True
