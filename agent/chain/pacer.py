"""When the dock's chain goes up (SPEC 8.1), for the sync worker's thread.

Before a clip is sent, central must hold the chain up to the clip's `clip_offloaded` entry
(`before_clip`); besides, whatever is new goes up at the end of each docking (the bus's
`offload_complete` or `undocked`), once a recorder's clips are freed (so central soon holds
the `recorder_clip_deleted` entries it checks against the clips' arrival) and at least every `custody_sync_s` while entries are new
(`due`, then `flush`). Sends happen on the caller's thread, one chunk at a time whatever the
thread (the sync worker's lanes share the pacer), so chunks go in order, each once, and before
the clips of later dockings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.upload import ChainUpload
from agent.config import DockConfig
from agent.events import EventBus, Freed, Offloaded
from agent.evidence.custody import FILE_NAME
from agent.transfer.outcome import QuotaExceeded, TransferFailed, TransferInterrupted
from agent.transfer.sender import FileSender

logger = logging.getLogger(__name__)
RETRY_MAX_S = 900.0  # a refused or failed chunk is tried again at most this far apart

DOCKING_ENDS = frozenset({"offload_complete", "undocked"})


class ChainPacer:
    """Decides when to send custody chunks; sends them through a ChainUpload."""

    def __init__(
        self,
        upload: ChainUpload,
        every_s: float,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        alert: Callable[..., None] = lambda *a, **k: None,
    ) -> None:
        self.upload = upload
        self.every_s = every_s
        self.wake = wake
        self.clock = clock
        self.alert = alert  # EventBus.alert(code, severity, message, **fields)
        self._failures = 0
        self._retry_at = 0.0
        self._docking_ended = threading.Event()
        self._last = -float("inf")  # at start-up, whatever is new goes up at once
        self._lock = threading.Lock()  # one thread sends chunks at a time

    def listen(self, item: Any) -> None:
        """Bus and clip-flow subscriber: a docking's end (its clips stored, the recorder
        undocked, its clips freed) makes a flush due and wakes the sync thread. Steps that come
        while a chunk is being sent are covered by the next one, so a burst costs few chunks."""
        ended = getattr(item, "type", None) in DOCKING_ENDS and hasattr(item, "fields")
        if ended or isinstance(item, Offloaded | Freed):
            self._docking_ended.set()
            self.wake()

    def before_clip(
        self,
        record: dict[str, Any],
        cancel: threading.Event | None = None,
        alive: Callable[[], None] = lambda: None,
    ) -> None:
        """Send the chain up to the clip's `clip_offloaded` entry (TransferFailed if refused).

        While another thread sends a chunk this one waits, calling `alive()` now and then."""
        seq = record.get("custody_seq")
        if not isinstance(seq, int) or seq <= 0 or self.upload.held_seq_of_current() >= seq:
            return  # held already: no wait for a chunk another thread sends meanwhile
        with self._turn(cancel, alive):
            self.upload.ensure(seq, cancel)

    @contextmanager
    def _turn(self, cancel: threading.Event | None, alive: Callable[[], None]) -> Iterator[None]:
        """Hold the right to send chunks (TransferInterrupted when cancelled meanwhile)."""
        while not self._lock.acquire(timeout=0.25):
            alive()
            if cancel is not None and cancel.is_set():
                raise TransferInterrupted("custody chunk: cancelled while another was sent")
        try:
            yield
        finally:
            self._lock.release()

    def due(self) -> bool:
        """Whether new entries should go up now."""
        if self.clock() < self._retry_at:
            return False
        if self._docking_ended.is_set():
            return True
        return self.clock() - self._last >= self.every_s and self.upload.pending()

    def flush(self, cancel: threading.Event | None = None) -> int:
        """Send what is new; how many chunks (TransferFailed when central refuses one)."""
        with self._turn(cancel, lambda: None):
            self._docking_ended.clear()
            self._last = self.clock()
            return self.upload.flush(cancel)

    def send_due(self, cancel: threading.Event | None = None) -> None:
        """Flush when due; a failure is logged and alerted, and the next try waits a period."""
        if not self.due():
            return
        try:
            self.flush(cancel)
        except TransferInterrupted as exc:
            logger.info("custody chunk interrupted: %s", exc)
            return
        except TransferFailed as exc:
            self._failed(exc)
            return
        self._failures = 0

    def _failed(self, exc: TransferFailed) -> None:
        self._failures += 1
        delay = min(self.every_s * 2 ** (self._failures - 1), RETRY_MAX_S)
        self._retry_at = self.clock() + delay
        why = (
            "central has no room for the custody log"
            if isinstance(exc, QuotaExceeded)
            else ("custody log chunk not held by central")
        )
        message = f"{why}: {exc}; next try in {delay:.0f} s"
        logger.error("%s", message)
        self.alert("sync_failed", "error", message, one_off=True, kind="custody")


def pacer_for(
    cfg: DockConfig,
    key: Ed25519PrivateKey,
    sender: FileSender,
    wake: Callable[[], None],
    bus: EventBus,
) -> ChainPacer:
    """The sync worker's pacer: the dock's log, its key, its FileSender, `[mqtt] custody_sync_s`,
    its alerts on the EventBus."""
    work = cfg.data_dir / "transfer" / "custody"
    upload = ChainUpload(cfg.data_dir / FILE_NAME, cfg.dock.id, key, work, sender.send)
    return ChainPacer(upload, cfg.mqtt.custody_sync_s, wake, alert=bus.alert)
