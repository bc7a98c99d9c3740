"""Throttled bay views: at most one every interval, and the last one held back still goes out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ThrottledSend:
    """Calls `send` at most every `interval_s`; a call the throttle drops is sent once it may be.

    Without the trailing send, the last progress before a stalled read (a slow USB link) would
    show only after the read ends, and the page would stand still meanwhile (SPEC 12: within 2 s).
    Sends never overlap, so each goes out after the one before it.
    """

    def __init__(self, send: Callable[[], None], interval_s: float) -> None:
        self._send = send
        self._interval_s = interval_s
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._sending = threading.Lock()

    def __call__(self, force: bool = False) -> None:
        """Send now if allowed (or forced), else make sure a trailing send is scheduled."""
        with self._lock:
            wait = self._last + self._interval_s - time.monotonic()
            if not force and wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._trailing)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._cancel()
            self._last = time.monotonic()
        with self._sending:
            self._send()

    def _trailing(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        with self._sending:
            self._send()  # sends what is current now, never an older copy

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Drop a pending trailing send."""
        with self._lock:
            self._cancel()
