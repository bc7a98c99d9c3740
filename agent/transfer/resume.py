"""Acknowledged segment offsets of one transfer, persisted so that a restart resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from agent import durable

logger = logging.getLogger(__name__)


class ResumeState:
    """Offsets the receiver acknowledged for (client id, file id), saved at most every `interval_s`."""

    def __init__(self, path: Path, key: dict[str, Any], interval_s: float = 1.0) -> None:
        self.path = path
        self.key = key
        self.interval_s = interval_s
        self.acked: set[int] = set()
        self._saved_at = 0.0
        self._dirty = False

    @classmethod
    def load(cls, state_dir: Path, key: dict[str, Any], interval_s: float = 1.0) -> ResumeState:
        """The saved state for `key`, or an empty one when none matches."""
        tag = hashlib.sha256(str(key["client_id"]).encode()).hexdigest()[:12]
        state = cls(state_dir / f"{key['file_id']}.{tag}.json", key, interval_s)
        try:
            saved = json.loads(state.path.read_bytes())
        except (OSError, ValueError):
            return state
        if isinstance(saved, dict) and saved.get("key") == key:
            offsets = saved.get("acked", [])
            state.acked = {o for o in offsets if isinstance(o, int) and o >= 0}
            logger.info(
                "resuming %s: %s segments already acknowledged", key["file_id"], len(state.acked)
            )
        return state

    def ack(self, offset: int) -> None:
        """Record one acknowledged segment; saved now if the interval has passed."""
        self.acked.add(offset)
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.interval_s:
            self.save()

    def save(self) -> None:
        """Write the state durably if it changed."""
        if not self._dirty:
            return
        durable.write_json(self.path, {"key": self.key, "acked": sorted(self.acked)})
        self._saved_at = time.monotonic()
        self._dirty = False

    def reset(self) -> None:
        """Forget every acknowledgement (after a failed fin: resend all)."""
        self.acked.clear()
        self._dirty = True
        self.save()

    def discard(self) -> None:
        """Remove the saved state (the transfer is complete)."""
        self.path.unlink(missing_ok=True)
