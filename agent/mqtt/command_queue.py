"""The remote-command rate limit (a token bucket) and a bounded queue that coalesces duplicates."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
W = TypeVar("W")


class RateLimit:
    """At most `per_min` a minute on average, in bursts of at most `burst` (default `per_min`)."""

    def __init__(
        self,
        per_min: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_s = per_min / 60.0
        self.burst = float(burst if burst is not None else per_min)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when one may go now (and it is counted), else the seconds until one may."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.per_s if self.per_s > 0 else float("inf")


@dataclass
class Queued(Generic[T, W]):
    """One queued item and everyone waiting for its outcome."""

    item: T
    waiters: list[W] = field(default_factory=list)


class CommandQueue(Generic[T, W]):
    """A FIFO of at most `bound` items; an item whose key is queued already joins it instead."""

    def __init__(self, bound: int, max_waiters: int = 8) -> None:
        self.bound = bound
        self.max_waiters = max_waiters
        self.peak = 0  # the longest the queue has been (it never exceeds `bound`)
        self._items: OrderedDict[Hashable, Queued[T, W]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def waiting(self) -> int:
        """Senders waiting for a queued item's outcome, all items together."""
        with self._cond:
            return sum(len(q.waiters) for q in self._items.values())

    def put(self, key: Hashable, item: T, waiter: W) -> str:
        """ "queued", "joined" (a duplicate of a queued item), or "full" (nothing was kept)."""
        with self._cond:
            queued = self._items.get(key)
            if queued is not None:
                if len(queued.waiters) >= self.max_waiters:
                    return "full"
                queued.waiters.append(waiter)
                return "joined"
            if len(self._items) >= self.bound or self._closed:
                return "full"
            self._items[key] = Queued(item, [waiter])
            self.peak = max(self.peak, len(self._items))
            self._cond.notify()
            return "queued"

    def get(self, timeout: float) -> Queued[T, W] | None:
        """The oldest item with its waiters, or None after `timeout` or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            _key, queued = self._items.popitem(last=False)
            return queued

    def close(self) -> None:
        """Refuse new items and wake the consumer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
