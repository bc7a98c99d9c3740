"""What a bay worker needs from the rest of the daemon, gathered in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from agent.config import DockConfig
from agent.dock.clock import ClockState
from agent.events import ClipFlow, EventBus
from agent.evidence.store import EvidenceStore

if TYPE_CHECKING:
    from agent.analysis.worker import Analysis
    from agent.dock.roster import Roster
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex
    from agent.evidence.recovery import IndexRecovery
    from agent.evidence.retention.purger import Purger
    from agent.mqtt.connection import MqttConnection
    from agent.notes.reconcile import NotesReconciler
    from agent.notes.store import NotesStore
    from agent.sync.worker import Sync


@dataclass
class Services:
    """The shared parts of the daemon; each is thread-safe."""

    cfg: DockConfig
    tz: ZoneInfo
    store: EvidenceStore
    index: ClipIndex
    custody: CustodyLog
    bus: EventBus
    flow: ClipFlow  # a clip's steps: offloaded -> analysed -> synced -> freed -> purged
    clock: Callable[[], ClockState]  # is the dock's own clock synchronised, and says who
    roster: Roster | None = None


@dataclass
class Parts:
    """The plugins `assemble` wired, by name and type (the demo summary and tests read them)."""

    notes: NotesStore
    mqtt: MqttConnection
    sync: Sync
    notes_reconciler: NotesReconciler
    purger: Purger
    index_recovery: IndexRecovery
    roster: Roster | None = None
    analysis: Analysis | None = None
