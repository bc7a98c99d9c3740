"""Assemble a daemon with its plugins (analysis, MQTT reporting, sync, systemd)."""

from __future__ import annotations

from agent.analysis import Analysis
from agent.config import DockConfig
from agent.daemon import Daemon
from agent.notes import NotesStore


def assemble(cfg: DockConfig, refresh_s: float = 5.0) -> Daemon:
    """A daemon for `cfg` with every plugin wired."""
    daemon = Daemon(cfg, refresh_s)
    s = daemon.services
    notes = NotesStore(cfg.data_dir, s.custody)
    analysis = Analysis(s, notes)
    s.analyser = analysis
    s.extra["notes"] = notes
    s.extra["notes_hook"] = analysis
    daemon.plugins.append(analysis)
    _custody_plugins(daemon)
    return daemon


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
