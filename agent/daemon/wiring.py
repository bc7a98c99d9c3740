"""Assemble a daemon with its plugins (analysis, MQTT reporting, sync, systemd)."""

from __future__ import annotations

import logging

from agent.analysis.worker import Analysis
from agent.config import DockConfig
from agent.daemon.remote import DockFacts, hold_handler, note_handler
from agent.daemon.reporting import Reporting
from agent.daemon.requests import RequestQueue
from agent.daemon.runtime import Daemon
from agent.daemon.services import Parts
from agent.dock.assign import Assigner
from agent.dock.clock import ClockSource
from agent.dock.roster import Roster
from agent.events import Offloaded
from agent.evidence.recovery import IndexRecovery
from agent.evidence.retention.purger import Purger
from agent.mqtt.commands import Handler
from agent.mqtt.connection import MqttConnection
from agent.mqtt.status import status_will
from agent.notes.reconcile import NotesReconciler
from agent.notes.store import NotesStore
from agent.sync.outbox import Outbox
from agent.sync.queue import DEFAULT_BACKOFF, Backoff
from agent.sync.worker import Sync
from agent.trust.dock import load_dock_trust
from agent.ui.server import MetricsSource

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


def assemble(
    cfg: DockConfig,
    refresh_s: float = 5.0,
    clock: ClockSource | None = None,
    sync_backoff: Backoff = DEFAULT_BACKOFF,
) -> Daemon:
    """A daemon for `cfg` with every plugin wired (`clock`: default from the policy;
    `sync_backoff`: sync's wait after failures, see `Sync`)."""
    roster = Roster(cfg.central, cfg.data_dir) if cfg.central.roster_url else None
    daemon = Daemon(cfg, refresh_s, clock, roster)  # makes data_dir (a failure there: exit 1)
    trust = load_dock_trust(cfg)  # a bad or exposed key: a config error before anything runs
    s = daemon.services
    notes = NotesStore(cfg.data_dir, s.custody)
    analysis = Analysis(s, notes)
    s.flow.subscribe(Offloaded, analysis.submit)
    s.bus.subscribe(analysis.on_dock_item)  # a recorder clock corrected: a note
    conn = MqttConnection(
        cfg.mqtt, cfg.client_id, will=status_will(cfg.topic), on_alert=s.bus.alert
    )
    outbox = Outbox(cfg.data_dir / "outbox" / "notes", conn, f"{cfg.topic}/notes")
    sync = Sync(s, conn, notes, s.flow, outbox, trust, sync_backoff)
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
    daemon.plugins.append(reconciler)
    purger = _custody_plugins(daemon)
    recovery = IndexRecovery(s.index, s.custody.path, cfg.data_dir, cfg.delete_policy, s.flow)
    daemon.plugins.insert(0, recovery)  # stops last: its mark is written when all else is still
    daemon.parts = Parts(notes, conn, sync, reconciler, purger, recovery, roster, analysis)
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
        metrics = _metrics(daemon) if s.cfg.ui.metrics else None
        daemon.plugins.append(
            PageServer(
                s.cfg.ui.listen, page, lambda: dock_status(s.cfg, s.index, s.custody), metrics
            )
        )


def _metrics(daemon: Daemon) -> MetricsSource:
    """GET /metrics (SPEC 12): one registry for this daemon, read from its own state."""
    from agent.ui.metrics import DockMetrics, Sources

    s = daemon.services
    metrics = DockMetrics(
        Sources(
            stats=s.index.stats,
            free_bytes=s.store.free_bytes,
            custody_head=s.custody.head,
            bays=lambda: {n: w.view for n, w in daemon.bays.items()},
            alerts=daemon.alerts.codes,
            clock_synced=lambda: bool(s.clock().synced),
            custody_path=s.custody.path,
            dock_id=s.cfg.dock.id,
        )
    )
    s.bus.subscribe(metrics.bus)
    return metrics.render


def _custody_plugins(daemon: Daemon) -> Purger:
    """The officer roster (when central serves one) and the local-copy purger."""
    s = daemon.services
    if s.roster is not None:
        daemon.plugins.append(s.roster)
    purger = Purger(s)
    daemon.plugins.append(purger)
    return purger
