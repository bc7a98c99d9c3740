"""What sync uses of the rest of the dock (read-only; the daemon's `Services` is one such thing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agent.config import DockConfig
    from agent.events import EventBus
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex


class SyncParts(Protocol):
    """The shared, thread-safe parts sync uses."""

    @property
    def cfg(self) -> DockConfig:
        """The configuration in force (replaced whole on reload)."""
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
        """Dock events and alerts."""
        ...
