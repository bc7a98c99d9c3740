"""Log a line once per key (a transfer), not once per message; remembers a bounded number of keys."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

REMEMBERED = 4096


class OnceLog:
    """`warning(key, ...)` logs only the first time `key` is seen among the last REMEMBERED keys."""

    def __init__(self, logger: logging.Logger, remembered: int = REMEMBERED) -> None:
        self._logger = logger
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._remembered = remembered
        self._lock = threading.Lock()

    def first(self, key: Hashable) -> bool:
        """True the first time `key` is seen (recently)."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._remembered:
                self._seen.popitem(last=False)
            return True

    def warning(self, key: Hashable, msg: str, *args: Any) -> None:
        """Log a warning, once per `key`."""
        if self.first(key):
            self._logger.warning(msg, *args)
