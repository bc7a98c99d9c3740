"""One transfer's persisted state: its fixed init payload and the acknowledged segment offsets."""

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
    """What (client id, file id) was sent as, and which offsets the receiver acknowledged.

    The init payload is fixed at the first attempt and kept until the transfer is done: EMQX
    refuses a differing re-init (`filemeta_conflict`, SPEC 7.1). Acknowledged offsets older than
    `ttl_s` (the init's `segments_ttl`) are forgotten: the broker may have collected them.
    """

    def __init__(
        self, path: Path, key: dict[str, Any], interval_s: float = 1.0, ttl_s: float = 0.0
    ) -> None:
        self.path = path
        self.key = key  # client_id, file_id, size; and segment_bytes, which only the offsets need
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.acked: set[int] = set()
        self.init: bytes | None = None
        self.acked_since: float | None = None  # wall time of the oldest acknowledgement kept
        self._saved_at = 0.0
        self._dirty = False

    @classmethod
    def load(
        cls, state_dir: Path, key: dict[str, Any], interval_s: float = 1.0, ttl_s: float = 0.0
    ) -> ResumeState:
        """The saved state for `key`, or an empty one when none matches."""
        tag = hashlib.sha256(str(key["client_id"]).encode()).hexdigest()[:12]
        state = cls(state_dir / f"{key['file_id']}.{tag}.json", key, interval_s, ttl_s)
        try:
            saved = json.loads(state.path.read_bytes())
        except (OSError, ValueError):
            return state
        saved_key = saved.get("key") if isinstance(saved, dict) else None
        if not isinstance(saved_key, dict) or _differs(saved_key, key, "segment_bytes"):
            return state
        if isinstance(saved.get("init"), str):
            state.init = saved["init"].encode("utf-8")
        since = saved.get("acked_since")
        offsets = saved.get("acked", [])
        if saved_key != key or not isinstance(since, int | float) or not isinstance(offsets, list):
            state._dirty = True  # other segment size: only the init payload carries over
            return state
        if ttl_s and time.time() - since > ttl_s:
            logger.info(
                "%s: acknowledged segments older than %.0f s; resending all", key["file_id"], ttl_s
            )
            state._dirty = True
            return state
        state.acked = {o for o in offsets if isinstance(o, int) and o >= 0}
        state.acked_since = float(since)
        logger.info(
            "resuming %s: %s segments already acknowledged", key["file_id"], len(state.acked)
        )
        return state

    def fix_init(self, payload: bytes) -> bytes:
        """The transfer's init payload: the saved one, else `payload`, saved now (durably)."""
        if self.init is None:
            self.init = payload
            self._dirty = True
            self.save()
        return self.init

    def ack(self, offset: int) -> None:
        """Record one acknowledged segment; saved now if the interval has passed."""
        if self.acked_since is None:
            self.acked_since = time.time()
        self.acked.add(offset)
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.interval_s:
            self.save()

    def save(self) -> None:
        """Write the state durably if it changed."""
        if not self._dirty:
            return
        body: dict[str, Any] = {"key": self.key, "acked": sorted(self.acked)}
        body["acked_since"] = self.acked_since
        if self.init is not None:
            body["init"] = self.init.decode("utf-8")
        durable.write_json(self.path, body)
        self._saved_at = time.monotonic()
        self._dirty = False

    def reset(self) -> None:
        """Forget every acknowledgement (after a failed fin: resend all); the init stays."""
        self.acked.clear()
        self.acked_since = None
        self._dirty = True
        self.save()

    def discard(self) -> None:
        """Remove the saved state (the transfer is complete)."""
        self.path.unlink(missing_ok=True)


def _differs(a: dict[str, Any], b: dict[str, Any], but: str) -> bool:
    """True when `a` and `b` differ in any key other than `but`."""
    keys = (set(a) | set(b)) - {but}
    return any(a.get(k) != b.get(k) for k in keys)
