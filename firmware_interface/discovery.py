"""Domain events of discovery: a recorder docked in a bay, or left it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware_interface.base import Recorder


@dataclass(frozen=True)
class Docked:
    """A recorder appeared in bay `bay`, reachable through `recorder`."""

    bay: int
    recorder: Recorder
    driver: str


@dataclass(frozen=True)
class Undocked:
    """The recorder in bay `bay` is gone."""

    bay: int


@dataclass(frozen=True)
class BayFault:
    """A bay's device could not be brought up (e.g. SDK refused); `message` says why."""

    bay: int
    code: str
    message: str


@dataclass(frozen=True)
class BayWaiting:
    """A recorder is in bay `bay` but must wait before it can be brought up; `message` says why."""

    bay: int
    code: str
    message: str


DiscoveryEvent = Docked | Undocked | BayFault | BayWaiting


class BayWatcher(Protocol):
    """Something that notices recorders coming and going and emits DockEvents."""

    def start(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        """Begin watching; `emit` is called from the watcher's own thread."""
        ...

    def stop(self) -> None:
        """Stop watching and release resources."""
        ...
