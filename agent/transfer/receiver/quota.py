"""Transfers in progress per client (SPEC 11: at most `max_partials_per_client`), for all workers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agent.transfer.receiver.escape import is_transfer_dir
from agent.transfer.receiver.expiry import PARTIAL_DIR, is_complete_dir

REMEMBERED_CLIENTS = 4096  # clients with nothing in progress kept counted (no rescan of their dir)


class InProgress:
    """The partial transfers of each client, counted from the store the first time it is asked."""

    def __init__(self, root: Path, max_per_client: int) -> None:
        self.root = root
        self.max_per_client = max_per_client
        self._lock = threading.Lock()
        self._by_client: dict[str, set[str]] = {}

    def admit(self, client_id: str, dirname: str) -> bool:
        """Count a transfer as in progress; False when the client already has its maximum."""
        with self._lock:
            held = self._held(client_id)
            if dirname in held:
                return True
            if len(held) >= self.max_per_client:
                return False
            held.add(dirname)
            return True

    def done(self, client_id: str, dirname: str) -> None:
        """A transfer completed, failed for good or expired: no longer in progress."""
        with self._lock:
            held = self._by_client.get(client_id)
            if held is not None:
                held.discard(dirname)
                if not held and len(self._by_client) > REMEMBERED_CLIENTS:
                    del self._by_client[client_id]  # counted from disk again when it returns

    def count(self, client_id: str) -> int:
        """Transfers in progress of `client_id`."""
        with self._lock:
            return len(self._held(client_id))

    def _held(self, client_id: str) -> set[str]:
        held = self._by_client.get(client_id)
        if held is None:
            held = self._by_client[client_id] = set(_partials_on_disk(self.root / client_id))
        return held


def _partials_on_disk(client_dir: Path) -> list[str]:
    """The transfer directories of one client with a partial and no complete file."""
    try:
        with os.scandir(client_dir) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [
        n
        for n in names
        if is_transfer_dir(n)
        and (client_dir / n / PARTIAL_DIR).is_dir()
        and not is_complete_dir(client_dir / n)
    ]
