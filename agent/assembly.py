"""Assemble a daemon with its plugins (analysis, MQTT reporting, sync, systemd)."""

from __future__ import annotations

from typing import Any

from agent.analysis import Analysis
from agent.config import DockConfig
from agent.daemon import Daemon
from agent.mqtt.connection import MqttConnection
from agent.mqtt.status import status_will
from agent.notes import NotesStore
from agent.outbox import Outbox
from agent.reporting import Reporting
from agent.sync import Sync


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


def note_handler(notes: NotesStore) -> Any:
    """The `note` command: append an explanation to a note."""

    def handle(payload: dict[str, Any]) -> dict[str, Any]:
        note = notes.explain(payload["note_id"], payload["author"], payload["text"])
        return note.to_json()

    return handle


def assemble(cfg: DockConfig, refresh_s: float = 5.0) -> Daemon:
    """A daemon for `cfg` with every plugin wired."""
    daemon = Daemon(cfg, refresh_s)
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
    handlers = {
        "note": note_handler(notes),
        "hold": hold_handler(daemon),
        "resync": sync.request_resync,
    }
    reporting = Reporting(daemon, conn, handlers)
    daemon.plugins += [analysis, reporting, outbox, sync, ConnectionPlugin(conn)]
    _custody_plugins(daemon)
    return daemon


def hold_handler(daemon: Daemon) -> Any:
    """The `hold` command: keep (or release) a local copy past retention."""
    from agent.retention import set_hold

    s = daemon.services

    def handle(payload: dict[str, Any]) -> dict[str, Any]:
        release = bool(payload.get("release", False))
        return set_hold(s.index, s.custody, payload["clip_id"], payload["reason"], release, "mqtt")

    return handle


def _custody_plugins(daemon: Daemon) -> None:
    """The officer roster (when central serves one) and the local-copy purger."""
    from agent.retention import Purger
    from agent.roster import Roster

    s = daemon.services
    if s.cfg.central.roster_url:
        roster = Roster(s.cfg.central, s.cfg.data_dir)
        s.extra["roster"] = roster
        daemon.plugins.append(roster)
    purger = Purger(s)
    s.extra["purger"] = purger
    daemon.plugins.append(purger)
