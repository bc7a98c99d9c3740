"""One window of unanswered segments for every send of a connection (SPEC 7: `max_inflight`).

Several transfers may be under way at once (the sync worker's lanes overlap one transfer's
init and fin round trips with another's segments); together they keep at most `max_inflight`
segments unanswered, so the window bounds what the link holds for the whole connection.
Each send gets a fair share of it: a large clip that holds the whole window would make a
small clip's every segment wait behind the window's worth of bytes queued on a slow link.
A send with nothing in flight waits for a slot, and while one waits, the others take none.
"""

from __future__ import annotations

import threading


def share(limit: int, sends: int) -> int:
    """Slots one of `sends` concurrent sends may hold of a window of `limit` (at least one)."""
    return max(1, -(-limit // max(1, sends)))


class Window:
    """Counts the connection's unanswered segments against a limit given at each take."""

    def __init__(self) -> None:
        self._used = 0
        self._sends = 0
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Segments unanswered now, over every send."""
        return self._used

    @property
    def waiting(self) -> int:
        """Sends holding no slot that wait for one now."""
        return self._waiting

    def join(self) -> None:
        """A send starts its segments (the shares shrink)."""
        with self._cond:
            self._sends += 1

    def leave(self) -> None:
        """A send is done with its segments (the others' shares grow)."""
        with self._cond:
            self._sends = max(0, self._sends - 1)
            self._cond.notify_all()

    def take(self, limit: int, held: int, wait: float = 0.0) -> bool:
        """One slot for a send holding `held`, within `limit` and its share; a send holding
        slots never waits and yields to sends that hold none, which wait up to `wait` s."""
        with self._cond:
            if held:
                if self._waiting or self._used >= limit or held >= share(limit, self._sends):
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
