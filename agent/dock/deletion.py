"""Freeing a recorder (SPEC 9): a file leaves the recorder only when it is the clip that was acked.

Before the unlink the file now on the recorder is re-hashed: same size and SHA-256 as the
clip, or it stays (a reused name holds a new clip, which is offloaded as the clip it is).
Custody gets `recorder_clip_deleting` before the unlink and `recorder_clip_deleted` after;
a file found gone at a retry (a crash between the two, or a recorder emptied elsewhere) is
`recorder_clip_missing`, and the clip is done with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agent.dock.parts import DockParts
from agent.dock.proof import recorder_sha256
from agent.events import Freed
from agent.evidence import lifecycle
from agent.evidence.lifecycle import deletable, recorder_handled
from agent.findings import Finding, warning
from firmware_interface.base import ClipEntry, ClipMissing, Recorder, RecorderError, RecorderGone

logger = logging.getLogger(__name__)


class Outcome(Enum):
    """What became of one clip's recorder copy."""

    KEPT = "kept"  # not deletable now (policy, other recorder, already handled)
    DELETED = "deleted"
    MISSING = "missing"  # already gone: recorded, done
    REPLACED = "replaced"  # other bytes under the clip's name: kept, to be offloaded
    FAILED = "failed"  # the recorder refused; retried at the next chance


@dataclass(frozen=True)
class Deletion:
    """The outcome and, on failure or replacement, a finding for the bay."""

    outcome: Outcome
    finding: Finding | None = None


def recorder_entry(record: dict[str, Any]) -> ClipEntry:
    """The recorder file an index row came from."""
    return ClipEntry(
        record["recorder_path"],
        record["size"],
        record.get("recorder_mtime", 0.0),
        record["media_type"],
    )


class RecorderDeleter:
    """Deletes recorder copies of one docked recorder's clips, each proved first."""

    def __init__(self, services: DockParts, recorder: Recorder, device_id: str) -> None:
        self.s = services
        self.recorder = recorder
        self.device_id = device_id

    def delete(self, clip_id: str) -> Deletion:
        """Delete the recorder's copy of `clip_id` if policy allows and it is still that clip."""
        record = self.s.index.get(clip_id)
        policy = self.s.cfg.delete_policy
        if record is None or recorder_handled(record) or record["device_id"] != self.device_id:
            return Deletion(Outcome.KEPT)
        if not deletable(record, policy):
            return Deletion(Outcome.KEPT)
        entry = recorder_entry(record)
        try:
            size, sha = recorder_sha256(self.recorder, entry)
        except ClipMissing:
            return self._missing(record, entry, "not on the recorder")
        except RecorderGone:
            raise
        except RecorderError as exc:
            return Deletion(Outcome.FAILED, warning("delete_failed", f"{entry.path}: {exc}"))
        if (size, sha) != (record["size"], clip_id):
            return self._replaced(record, entry, size, sha)
        return self._unlink(record, entry)

    def _unlink(self, record: dict[str, Any], entry: ClipEntry) -> Deletion:
        clip_id = record["clip_id"]
        fields = {"device_id": self.device_id, "file": entry.path, "sha256": clip_id}
        self.s.custody.append("recorder_clip_deleting", **fields)
        try:
            self.recorder.delete_clip(entry)
        except ClipMissing:
            return self._missing(record, entry, "gone before the unlink")
        except RecorderGone:
            raise
        except RecorderError as exc:
            return Deletion(Outcome.FAILED, warning("delete_failed", f"{entry.path}: {exc}"))
        self.s.custody.append("recorder_clip_deleted", **fields)
        self._done(clip_id)
        return Deletion(Outcome.DELETED)

    def _missing(self, record: dict[str, Any], entry: ClipEntry, why: str) -> Deletion:
        """Already gone (e.g. a crash after the unlink): record it once, the clip is done."""
        clip_id = record["clip_id"]
        self.s.custody.append(
            "recorder_clip_missing",
            device_id=self.device_id,
            file=entry.path,
            sha256=clip_id,
            reason=why,
        )
        logger.info("recorder copy of %s already gone (%s)", entry.path, why, extra=self._extra())
        self._done(clip_id)
        return Deletion(Outcome.MISSING)

    def _replaced(self, record: dict[str, Any], entry: ClipEntry, size: int, sha: str) -> Deletion:
        """Other bytes under the acked clip's name: never deleted; the acked clip is gone."""
        clip_id = record["clip_id"]
        self.s.custody.append(
            "recorder_clip_missing",
            device_id=self.device_id,
            file=entry.path,
            sha256=clip_id,
            reason="replaced",
            found_sha256=sha,
            found_size=size,
        )
        self._done(clip_id)
        message = (
            f"{entry.path} now holds other bytes ({sha[:12]}, {size} bytes) than the clip "
            f"central acknowledged ({clip_id[:12]}): not deleted; offloaded as a new clip"
        )
        logger.warning("%s", message, extra=self._extra())
        return Deletion(
            Outcome.REPLACED, warning("recorder_file_replaced", message, path=entry.path)
        )

    def _done(self, clip_id: str) -> None:
        policy = self.s.cfg.delete_policy
        lifecycle.advance(self.s.index, clip_id, policy, **lifecycle.freed())
        self.s.flow.publish(Freed(clip_id, self.device_id))

    def _extra(self) -> dict[str, Any]:
        return {"DOCK_ID": self.s.cfg.dock.id, "DEVICE_ID": self.device_id}
