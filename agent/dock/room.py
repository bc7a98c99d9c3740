"""Room in the store for an offload's next clips: the file system asked rarely, never wrongly."""

from __future__ import annotations

from agent.evidence.store import EvidenceStore

# The store's free space is looked up afresh once this much was staged since the last look
# (a photo each time cost a statvfs per photo), and whenever a clip seems not to fit.
RECHECK_BYTES = 16 * 1024 * 1024


class Room:
    """Room in the store for the next clips of one offload, above the reserve.

    A clip is refused only on a fresh look at the file system; one that fits is admitted
    on a look at most RECHECK_BYTES of this offload's own copies old, what those took off.
    """

    def __init__(self, store: EvidenceStore) -> None:
        self._store = store
        self._left = 0
        self._since = RECHECK_BYTES  # no look yet

    def fits(self, size: int) -> bool:
        """Whether a clip of `size` bytes fits and leaves the reserve free."""
        if self._since >= RECHECK_BYTES or size > self._left:
            self._left = self._store.free_bytes() - self._store.reserve_bytes
            self._since = 0
        return size <= self._left

    def took(self, size: int) -> None:
        """A copy of `size` bytes was written."""
        self._left -= size
        self._since += size
