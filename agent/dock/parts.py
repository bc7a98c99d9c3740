"""What a bay worker and its helpers use of the rest of the dock (read-only; the daemon's
`Services` is one such thing, and hot reload swaps `cfg` and `clock` under it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from agent.config import DockConfig
    from agent.dock.clock import ClockState
    from agent.dock.roster import Roster
    from agent.events import ClipFlow, EventBus
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex
    from agent.evidence.store import EvidenceStore


class DockParts(Protocol):
    """The shared, thread-safe parts a bay uses: config, store, index, custody, bus, flow."""

    @property
    def cfg(self) -> DockConfig:
        """The configuration in force (replaced whole on reload)."""
        ...

    @property
    def tz(self) -> ZoneInfo:
        """The zone recorder local times are in."""
        ...

    @property
    def store(self) -> EvidenceStore:
        """Where clips are copied and proved."""
        ...

    @property
    def index(self) -> ClipIndex:
        """The clip index."""
        ...

    @property
    def custody(self) -> CustodyLog:
        """The custody log."""
        ...

    @property
    def bus(self) -> EventBus:
        """Bay views, dock events and alerts."""
        ...

    @property
    def flow(self) -> ClipFlow:
        """A clip's steps (the bay publishes Offloaded; deletion publishes Freed)."""
        ...

    @property
    def clock(self) -> Callable[[], ClockState]:
        """Is the dock's own clock synchronised, and says who."""
        ...

    @property
    def roster(self) -> Roster | None:
        """The officer roster central serves, if configured."""
        ...
