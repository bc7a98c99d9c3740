"""Holds: keep a local copy past retention (or stop keeping it), logged in custody."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.evidence.lifecycle import has_local_copy, state_of

if TYPE_CHECKING:
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex

logger = logging.getLogger(__name__)


class HoldError(Exception):
    """A hold or release was refused; the message says why."""


def set_hold(
    index: ClipIndex,
    custody: CustodyLog,
    clip_id: str,
    reason: str,
    release: bool,
    by: str,
) -> dict[str, Any]:
    """Hold (or release) a clip's local copy past retention; logged in custody (`hold`)."""
    if not reason or not reason.strip():
        raise HoldError("a hold needs a reason")
    record = index.get(clip_id)
    if record is None:
        raise HoldError(f"unknown clip {clip_id}")
    if not release and not has_local_copy(record):
        raise HoldError(f"clip {clip_id[:12]}: its local copy was already purged")
    entry = custody.append(
        "hold", clip=clip_id, sha256=record["sha256"], reason=reason, release=release, by=by
    )
    updated = index.update(
        clip_id,
        held=not release,
        hold_reason=None if release else reason,
        hold_by=by,
        hold_at=entry["ts"],
    )
    logger.info("clip %s %s by %s: %s", clip_id[:12], "released" if release else "held", by, reason)
    return {
        "clip_id": clip_id,
        "held": updated.get("held"),
        "hold_reason": updated.get("hold_reason"),
        "state": state_of(updated),
        "custody_seq": entry["seq"],
        "custody_hash": entry["hash"],
    }
