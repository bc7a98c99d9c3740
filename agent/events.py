"""The dock's domain events: bay views, dock events and alerts, the bus that fans them out to
whoever reports them, and the one record of which alerts are active.

Active alerts (the `alerts` list of R/status and of `dock-agent status`): an Alert makes its
code active unless it is a notice about one thing that happened (severity `info`, or a truthy
`one_off` field, e.g. one late clip); severity `clear` or a truthy `cleared` field removes the
code (agent.daemon.alerts.transitions produces such clears).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from agent.evidence.record import Docking
from agent.findings import Finding
from firmware_interface.base import RecorderEvent

logger = logging.getLogger(__name__)

BAY_STATES = ("empty", "identifying", "validating", "offloading", "charging", "ready", "fault")


def now_iso() -> str:
    """The current true time, ISO 8601 with offset."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Progress:
    """How far a bay's offload has come."""

    clips_done: int = 0
    clips_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass
class BayView:
    """What a bay shows (SPEC 6 R/bay/{n})."""

    number: int
    state: str = "empty"
    device_id: str | None = None
    officer_id: str | None = None
    battery_pct: float | None = None
    clock_offset_s: float | None = None
    storage_free_pct: float | None = None
    progress: Progress = field(default_factory=Progress)
    findings: list[Finding] = field(default_factory=list)
    ts: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        """The SPEC 6 payload of R/bay/{n}."""
        data = asdict(self)
        data.pop("number")
        data["findings"] = [f.to_json() for f in self.findings]
        return data


@dataclass(frozen=True)
class DockEvent:
    """One entry for R/events: a type and its fields."""

    type: str
    fields: dict[str, Any]
    ts: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        """The SPEC 6 payload of R/events."""
        return {"type": self.type, "ts": self.ts, **self.fields}


@dataclass(frozen=True)
class Alert:
    """One entry for R/alerts."""

    code: str
    severity: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    ts: str = field(default_factory=now_iso)

    def to_json(self) -> dict[str, Any]:
        """The SPEC 6 payload of R/alerts."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "ts": self.ts,
            **self.fields,
        }


def alert_is_clear(alert: Alert) -> bool:
    """True when `alert` ends its condition (severity `clear` or a truthy `cleared` field)."""
    return alert.severity == "clear" or bool(alert.fields.get("cleared"))


def alert_is_one_off(alert: Alert) -> bool:
    """True for a notice about one thing that happened (severity `info`, or `one_off` set)."""
    return alert.severity == "info" or bool(alert.fields.get("one_off"))


class ActiveAlerts:
    """The alerts active now, by code (the latest of each): the one owner of that set."""

    def __init__(self) -> None:
        self._active: dict[str, Alert] = {}
        self._lock = threading.Lock()

    def on_item(self, item: BayView | DockEvent | Alert) -> bool:
        """Bus listener: apply an alert; True when the set of active codes changed."""
        if not isinstance(item, Alert):
            return False
        with self._lock:
            before = set(self._active)
            if alert_is_clear(item):
                self._active.pop(item.code, None)
            elif not alert_is_one_off(item):
                self._active[item.code] = item
            return set(self._active) != before

    def codes(self) -> list[str]:
        """The codes of the alerts active now, sorted."""
        with self._lock:
            return sorted(self._active)

    def documents(self) -> list[dict[str, Any]]:
        """The active alerts as their R/alerts payloads, in the order they became active."""
        with self._lock:
            return [alert.to_json() for alert in self._active.values()]


Listener = Callable[[BayView | DockEvent | Alert], object]


class EventBus:
    """Fan-out of bay views, events and alerts to listeners; a failing listener is logged."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` for everything emitted from now on."""
        with self._lock:
            self._listeners.append(listener)

    def emit(self, item: BayView | DockEvent | Alert) -> None:
        """Hand `item` to every listener."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(item)
            except Exception:
                logger.exception("event listener failed on %s", type(item).__name__)

    def event(self, type_: str, **fields: Any) -> None:
        """Emit a DockEvent."""
        self.emit(DockEvent(type_, fields))

    def alert(self, code: str, severity: str, message: str, **fields: Any) -> None:
        """Emit an Alert."""
        self.emit(Alert(code, severity, message, fields))


# ---- a clip's steps: each stage publishes what it finished, the next stage subscribes -------


@dataclass(frozen=True)
class Offloaded:
    """A docking's clips are stored and proved; analysis takes them from here."""

    docking: Docking
    clip_ids: tuple[str, ...]
    events: tuple[RecorderEvent, ...] = ()  # the recorder's own event log, read at docking


@dataclass(frozen=True)
class Analysed:
    """These clips are probed and noted; sync takes them from here."""

    clip_ids: tuple[str, ...]


@dataclass(frozen=True)
class Synced:
    """Central acknowledged the clip; the bay holding its recorder frees the recorder copy."""

    clip_id: str
    device_id: str


@dataclass(frozen=True)
class Freed:
    """The recorder's copy of the clip was deleted, or found gone."""

    clip_id: str
    device_id: str


@dataclass(frozen=True)
class Purged:
    """The clip's local copy was removed after its retention."""

    clip_id: str


ClipStep = Offloaded | Analysed | Synced | Freed | Purged
Step = TypeVar("Step", Offloaded, Analysed, Synced, Freed, Purged)


class ClipFlow:
    """Routes each clip step to the stages that subscribed to its kind (handlers must be quick:
    they hand the step to their own thread); a failing handler is logged."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], object]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: type[Step], handler: Callable[[Step], object]) -> None:
        """Call `handler` with every step of `kind` published from now on."""
        with self._lock:
            self._handlers.setdefault(kind, []).append(handler)

    def publish(self, step: ClipStep) -> None:
        """Hand `step` to every handler of its kind."""
        with self._lock:
            handlers = list(self._handlers.get(type(step), ()))
        for handler in handlers:
            try:
                handler(step)
            except Exception:
                logger.exception("clip step handler failed on %s", type(step).__name__)
