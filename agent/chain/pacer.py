"""When the dock's chain goes up (SPEC 8.1), for the sync worker's thread.

Before a clip is sent, central must hold the chain up to the clip's `clip_offloaded` entry
(`before_clip`); besides, whatever is new goes up at the end of each docking (the bus's
`offload_complete` or `undocked`) and at least every `custody_sync_s` while entries are new
(`due`, then `flush`). All sends happen on the caller's thread, so chunks go in order and
before the clips of later dockings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.upload import ChainUpload, SendFile
from agent.config import DockConfig
from agent.evidence.custody import FILE_NAME

DOCKING_ENDS = frozenset({"offload_complete", "undocked"})


class ChainPacer:
    """Decides when to send custody chunks; sends them through a ChainUpload."""

    def __init__(
        self,
        upload: ChainUpload,
        every_s: float,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upload = upload
        self.every_s = every_s
        self.wake = wake
        self.clock = clock
        self._docking_ended = threading.Event()
        self._last = -float("inf")  # at start-up, whatever is new goes up at once

    def listen(self, item: Any) -> None:
        """Bus subscriber: a docking's end makes a flush due (and wakes the sync thread)."""
        if getattr(item, "type", None) in DOCKING_ENDS and hasattr(item, "fields"):
            self._docking_ended.set()
            self.wake()

    def before_clip(self, record: dict[str, Any], cancel: threading.Event | None = None) -> None:
        """Send the chain up to the clip's `clip_offloaded` entry (TransferFailed if refused)."""
        seq = record.get("custody_seq")
        if isinstance(seq, int) and seq > 0:
            self.upload.ensure(seq, cancel)

    def due(self) -> bool:
        """Whether new entries should go up now."""
        if self._docking_ended.is_set():
            return True
        return self.clock() - self._last >= self.every_s and self.upload.pending()

    def flush(self, cancel: threading.Event | None = None) -> int:
        """Send what is new; how many chunks (TransferFailed when central refuses one)."""
        self._docking_ended.clear()
        self._last = self.clock()
        return self.upload.flush(cancel)


def pacer_for(
    cfg: DockConfig, key: Ed25519PrivateKey, send: SendFile, wake: Callable[[], None]
) -> ChainPacer:
    """The sync worker's pacer: the dock's log, its key, its sender, `[mqtt] custody_sync_s`."""
    work = cfg.data_dir / "transfer" / "custody"
    upload = ChainUpload(cfg.data_dir / FILE_NAME, cfg.dock.id, key, work, send)
    return ChainPacer(upload, cfg.mqtt.custody_sync_s, wake)
