"""What a bay worker needs from the rest of the daemon, gathered in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from agent.config import DockConfig
from agent.daemon.events import EventBus
from agent.dock.clock import ClockState
from agent.evidence.store import EvidenceStore

if TYPE_CHECKING:
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex


class Analyser(Protocol):
    """Probing and timeline analysis of a docking's clips, after offload."""

    def submit(self, docking_id: str, clip_ids: list[str], context: dict[str, Any]) -> None:
        """Queue a finished docking's clips for analysis."""
        ...


@dataclass
class Services:
    """The shared parts of the daemon; each is thread-safe."""

    cfg: DockConfig
    tz: ZoneInfo
    store: EvidenceStore
    index: ClipIndex
    custody: CustodyLog
    bus: EventBus
    clock: Callable[[], ClockState]  # is the dock's own clock synchronised, and says who
    analyser: Analyser | None = None
    extra: dict[str, Any] = field(default_factory=dict)
