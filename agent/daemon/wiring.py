"""Assemble a daemon with its plugins (analysis, MQTT reporting, sync, systemd)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.analysis.worker import Analysis
from agent.config import DockConfig
from agent.daemon.remote import DockFacts, hold_handler, note_handler
from agent.daemon.reporting import Reporting
from agent.daemon.requests import RequestQueue
from agent.daemon.runtime import Daemon
from agent.dock.assign import Assigner
from agent.dock.clock import ClockSource
from agent.evidence.custody import iter_entries
from agent.mqtt.commands import Handler
from agent.mqtt.connection import MqttConnection
from agent.mqtt.status import status_will
from agent.notes.store import NotesStore
from agent.sync.outbox import Outbox
from agent.sync.worker import Sync

logger = logging.getLogger(__name__)


class ConnectionPlugin:
    """Starts the MQTT connection after every subscriber registered; stops it first."""

    def __init__(self, conn: MqttConnection) -> None:
        self.conn = conn

    def start(self) -> None:
        """Connect in the background (never blocks when the broker is down)."""
        self.conn.start()

    def stop(self) -> None:
        """Disconnect; the broker then publishes the will (dock offline)."""
        self.conn.stop()


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


def assemble(cfg: DockConfig, refresh_s: float = 5.0, clock: ClockSource | None = None) -> Daemon:
    """A daemon for `cfg` with every plugin wired (`clock`: default from the policy)."""
    daemon = Daemon(cfg, refresh_s, clock)
    s = daemon.services
    notes = NotesStore(cfg.data_dir, s.custody)
    analysis = Analysis(s, notes)
    s.analyser = analysis
    s.extra["notes"] = notes
    s.extra["notes_hook"] = analysis
    conn = MqttConnection(
        cfg.mqtt, cfg.client_id, will=status_will(cfg.topic), on_alert=s.bus.alert
    )
    s.extra["mqtt"] = conn
    outbox = Outbox(cfg.data_dir / "outbox" / "notes", conn, f"{cfg.topic}/notes")
    sync = Sync(s, conn, notes, daemon.clip_synced, outbox)
    s.extra["sync"] = sync
    assigner = Assigner(daemon.bays, {b.number: b.kind for b in cfg.bay}, s.custody)
    handlers: dict[str, Handler] = {
        "note": note_handler(notes),
        "hold": hold_handler(s.index, s.custody),
        "resync": sync.request_resync,
        "assign": assigner,
    }
    reporting = Reporting(daemon, conn, handlers, DockFacts(notes, s.index, sync.resync_room))
    requests = RequestQueue(cfg.data_dir, {"assign": assigner})
    daemon.plugins += [analysis, reporting, outbox, sync, requests, ConnectionPlugin(conn)]
    reconciler = NotesReconciler(notes, s.custody.path)
    s.extra["notes_reconciler"] = reconciler
    daemon.plugins.append(reconciler)
    _custody_plugins(daemon)
    _ui_plugins(daemon)
    return daemon


def _ui_plugins(daemon: Daemon) -> None:
    """The bays' lights and the status page (SPEC 12), when configured."""
    from agent.ui.lights import bay_lights
    from agent.ui.page import render_page
    from agent.ui.server import PageServer
    from agent.ui.status import dock_status

    s = daemon.services
    lights = bay_lights(s.cfg, s.bus)
    if lights is not None:
        s.bus.subscribe(lights)
        daemon.plugins.append(lights)
    if s.cfg.ui.listen:
        page = render_page(s.cfg.dock.id, s.cfg.ui.language)
        daemon.plugins.append(
            PageServer(s.cfg.ui.listen, page, lambda: dock_status(s.cfg, s.index, s.custody))
        )


def _custody_plugins(daemon: Daemon) -> None:
    """The officer roster (when central serves one) and the local-copy purger."""
    from agent.dock.roster import Roster
    from agent.evidence.retention import Purger

    s = daemon.services
    if s.cfg.central.roster_url:
        roster = Roster(s.cfg.central, s.cfg.data_dir)
        s.extra["roster"] = roster
        daemon.plugins.append(roster)
    purger = Purger(s)
    s.extra["purger"] = purger
    daemon.plugins.append(purger)
