"""A token bucket for the upload rate limit (0 = unlimited)."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """Allows `rate` bytes per second on average, bursts up to `burst` bytes (shared by threads)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def set_rate(self, rate: float, burst: float) -> None:
        """Change the rate and burst; tokens saved so far stay (up to the new burst)."""
        with self._lock:
            self.rate = rate
            self.burst = max(burst, 1.0)
            self._tokens = min(self._tokens, self.burst)

    def take(self, amount: int, cancel: threading.Event | None = None) -> bool:
        """Wait until `amount` bytes may go; False if cancelled first. Unlimited when rate <= 0."""
        if self.rate <= 0:
            return True
        while True:
            with self._lock:
                if self.rate <= 0:  # the limit was lifted meanwhile
                    return True
                need = min(float(amount), self.burst)
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= need:
                    self._tokens -= need
                    return True
                delay = (need - self._tokens) / self.rate
            if cancel is not None and cancel.wait(delay):
                return False
            if cancel is None:
                time.sleep(delay)
