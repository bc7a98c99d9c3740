"""The sync worker's lanes: a few clips delivered at once, so no round trip idles the link.

One clip's delivery (its custody chunk, the clip, its manifest: SPEC 7.1, 8.1) spends an init
and a fin round trip per transfer with nothing of its own to send; a second and third lane
send their segments meanwhile (FileSender keeps one window for them all). The sync thread
starts clips in priority order on free lanes; each lane tells when its clip is done.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Clips delivered at once. Each lane's commands wait behind the window's worth of segments
# queued on a slow link (32 x 256 KiB is 1.7 s at 40 Mbit/s), so on such a link a lane spends
# most of a small clip's delivery waiting. Measured on the docking's mix over 40 Mbit/s and
# 40 ms (SPEC 10, `python -m tests.bench --only sync:mix`): clip bytes at 0.84 of the link
# with 3 lanes, 0.86 with 4, 0.90-0.92 with 6, 0.92-0.93 with 8. Each lane holds at most one
# open transfer at the receiver (16 allowed per dock; the chain's thread may hold one more).
LANES = 8


@dataclass
class _Busy:
    life: float  # when the lane last showed life of its own (picked the clip up, waited its turn)
    thread_id: int | None = None  # the lane's thread once it picked the clip up


class Lanes:
    """`count` threads, each running `deliver(record)` for one clip at a time; `done()` after."""

    def __init__(
        self,
        count: int,
        deliver: Callable[[dict[str, Any]], None],
        done: Callable[[], None],
        name: str = "sync-lane",
    ) -> None:
        self.count = max(1, count)
        self._deliver = deliver
        self._done = done
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._busy: dict[str, _Busy] = {}  # clip id -> its lane
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i + 1}", daemon=True)
            for i in range(self.count)
        ]

    def start(self) -> None:
        """Start the lanes' threads."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Let each lane end once its clip is done (its sends stop on the worker's stop event)."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def free(self) -> bool:
        """Whether a lane can take a clip now."""
        with self._lock:
            return len(self._busy) < self.count

    def busy(self) -> bool:
        """Whether any lane is delivering a clip."""
        with self._lock:
            return bool(self._busy)

    def clips(self) -> frozenset[str]:
        """The clips being delivered now."""
        with self._lock:
            return frozenset(self._busy)

    def submit(self, record: dict[str, Any]) -> None:
        """Deliver `record` on a free lane (the caller checked `free()` and that it is not busy)."""
        with self._lock:
            self._busy[record["clip_id"]] = _Busy(time.monotonic())
        self._jobs.put(record)

    def touch(self) -> None:
        """The calling lane shows life (it waits for its turn at something, not hung)."""
        me = threading.get_ident()
        with self._lock:
            for busy in self._busy.values():
                if busy.thread_id == me:
                    busy.life = time.monotonic()

    def healthy(self, stall_s: float, alive_at: Callable[[int], float]) -> bool:
        """False when a lane delivering a clip showed no life for `stall_s`; `alive_at(thread)`
        is the sender's last sign of life on that thread."""
        now = time.monotonic()
        with self._lock:
            lives = [
                max(b.life, alive_at(b.thread_id) if b.thread_id is not None else 0.0)
                for b in self._busy.values()
            ]
        return all(now - life < stall_s for life in lives)

    def _run(self) -> None:
        while (record := self._jobs.get()) is not None:
            clip_id = record["clip_id"]
            with self._lock:
                self._busy[clip_id] = _Busy(time.monotonic(), threading.get_ident())
            try:
                self._deliver(record)
            except Exception:  # a lane outlives any one clip
                logger.exception("sync of %s failed unexpectedly", clip_id[:12])
            finally:
                with self._lock:
                    self._busy.pop(clip_id, None)
                self._done()
