"""Clips central asked to have resent (the `resync` command): in the order asked, no repeats."""

from __future__ import annotations

import threading
from collections.abc import Container

RESYNC_MAX = 256  # clips waiting to be resent at most (the `resync` command is refused beyond)


class ResyncQueue:
    """Bounded, ordered, thread-safe: commands add on the MQTT thread, the sync thread takes."""

    def __init__(self, limit: int = RESYNC_MAX) -> None:
        self.limit = limit
        self._clips: dict[str, None] = {}
        self._lock = threading.Lock()

    def room(self, clip_id: str) -> bool:
        """True when `clip_id` can be queued (or is queued already)."""
        with self._lock:
            return clip_id in self._clips or len(self._clips) < self.limit

    def add(self, clip_id: str) -> None:
        """Queue `clip_id` (ValueError when `limit` clips wait already)."""
        with self._lock:
            if clip_id not in self._clips and len(self._clips) >= self.limit:
                raise ValueError(f"{self.limit} clips are already waiting to be resent")
            self._clips[clip_id] = None

    def take(self, busy: Container[str] = ()) -> str | None:
        """The first clip asked for that is not `busy` (being sent now), removed; else None."""
        with self._lock:
            clip_id = next((c for c in self._clips if c not in busy), None)
            if clip_id is not None:
                del self._clips[clip_id]
            return clip_id
