"""One window of unanswered segments for every send of a connection (SPEC 7: `max_inflight`).

Several transfers may be under way at once (the sync worker's lanes overlap one transfer's
init and fin round trips with another's segments); together they keep at most `max_inflight`
segments unanswered, so the window bounds what the link holds for the whole connection.
A send with nothing in flight waits for a slot, and while one waits, sends that already hold
slots take no more: each transfer keeps at least one segment moving.
"""

from __future__ import annotations

import threading


class Window:
    """Counts the connection's unanswered segments against a limit given at each take."""

    def __init__(self) -> None:
        self._used = 0
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Segments unanswered now, over every send."""
        return self._used

    def take(self, limit: int, holding: bool, wait: float = 0.0) -> bool:
        """One slot if fewer than `limit` are used; a send `holding` slots never waits, and
        yields to sends that hold none; one holding none waits up to `wait` seconds."""
        with self._cond:
            if holding:
                if self._waiting or self._used >= limit:
                    return False
            elif self._used >= limit:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._used < limit, wait)
                finally:
                    self._waiting -= 1
                if self._used >= limit:
                    return False
            self._used += 1
            return True

    def give(self, count: int = 1) -> None:
        """Return `count` slots (answered, timed out, or the send ended)."""
        if count <= 0:
            return
        with self._cond:
            self._used = max(0, self._used - count)
            self._cond.notify_all()
