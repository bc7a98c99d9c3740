"""At start-up, what a crash left out of custody for notes is logged (in the background)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.evidence.custody import iter_entries
from agent.notes.store import NotesStore

logger = logging.getLogger(__name__)


class _Stopped(Exception):
    """The daemon stops while the custody log is read: reconcile appends nothing."""


class NotesReconciler:
    """At start-up, logs what a crash left out of custody for notes (in the background).

    Reading a long custody log takes a while (150,000 entries: about half a second), so
    it runs in its own thread after READY; the notes lock keeps notes still meanwhile.
    """

    def __init__(self, notes: NotesStore, custody_path: Path) -> None:
        self.notes = notes
        self.custody_path = custody_path
        self.appended: int | None = None  # set when the pass finished
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notes-reconcile", daemon=True)

    def start(self) -> None:
        """Start the pass; start-up does not wait for it."""
        self._thread.start()

    def stop(self) -> None:
        """Abandon an unfinished pass (nothing is appended then)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _entries(self) -> Iterator[dict[str, Any]]:
        """The whole log, or _Stopped: a log read only in part would look incomplete."""
        if not self.custody_path.exists():
            return
        for entry in iter_entries(self.custody_path):
            if self._stop.is_set():
                raise _Stopped
            yield entry

    def _run(self) -> None:
        """One pass (logged, never raised)."""
        started = time.monotonic()
        try:
            self.appended = self.notes.reconcile(self._entries())
        except _Stopped:
            return
        except Exception:
            logger.exception("notes: reconciling with the custody log failed")
            return
        finally:
            self.done.set()
        took = time.monotonic() - started
        logger.info(
            "notes: %d custody entries recovered (custody log read in %.1f s)", self.appended, took
        )
