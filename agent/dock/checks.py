"""Recorder validation (SPEC 1 step 2, 6 ready rule): pure policy over reported values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.config import PolicySection
from agent.dock.clock import ClockState
from agent.findings import FAULT, Finding, fault, info, warning
from agent.timebase import clock_offset_s
from firmware_interface.base import Capabilities, Status

EARLIEST_PLAUSIBLE = datetime(2000, 1, 1)
LATEST_PLAUSIBLE_YEARS = 20


@dataclass
class ClockVerdict:
    """What the clock check found and whether to set the recorder's clock."""

    offset_s: float | None
    set_clock: bool
    findings: list[Finding] = field(default_factory=list)


def check_clock(
    status: Status,
    caps: Capabilities,
    now: datetime,
    tz: ZoneInfo,
    policy: PolicySection,
    dock_clock: ClockState,
) -> ClockVerdict:
    """Measure the recorder's drift and decide whether its clock may be corrected."""
    allowed = caps.set_clock and (dock_clock.synced is True or not policy.require_synced_clock)
    unsynced = [] if allowed or not caps.set_clock else [unsynced_finding(dock_clock)]
    if status.clock is None:
        note = info("clock_unverifiable", "recorder cannot report its clock; drift unknown")
        return ClockVerdict(None, allowed, [note, *unsynced])
    if not _plausible(status.clock, now, tz):
        bad = fault(
            "clock_impossible",
            f"recorder clock reads {status.clock:%Y-%m-%d %H:%M:%S}",
            clock=status.clock.isoformat(),
        )
        return ClockVerdict(None, allowed, [bad, *unsynced])
    offset = round(clock_offset_s(status.clock, tz, now), 3)
    if abs(offset) <= policy.clock_tolerance_s:
        return ClockVerdict(offset, False, [])
    drift = warning("clock_drift", f"recorder clock is {offset:+.1f} s off", offset_s=offset)
    return ClockVerdict(offset, allowed, [drift, *unsynced])


def unsynced_finding(dock_clock: ClockState) -> Finding:
    """clock_unsynced, naming the source asked and its answer."""
    state = "is not synchronised" if dock_clock.synced is False else "cannot be confirmed"
    return warning(
        "clock_unsynced",
        f"dock clock {state} ({dock_clock.reason}); recorder clock measured, not set",
        source=dock_clock.source,
        reason=dock_clock.reason,
    )


def _plausible(clock: datetime, now: datetime, tz: ZoneInfo) -> bool:
    local_now = now.astimezone(tz).replace(tzinfo=None)
    return (
        EARLIEST_PLAUSIBLE
        <= clock
        <= local_now.replace(year=local_now.year + LATEST_PLAUSIBLE_YEARS)
    )


def check_battery(status: Status, policy: PolicySection) -> list[Finding]:
    """Battery findings: impossible values are faults, a low battery keeps the bay charging."""
    pct = status.battery_pct
    if pct is None:
        return [warning("battery_unknown", "recorder did not report its battery")]
    if not 0 <= pct <= 100:
        return [fault("battery_impossible", f"recorder reports battery {pct:g} %", battery_pct=pct)]
    if pct < policy.ready_battery_pct:
        return [
            info(
                "battery_charging",
                f"battery {pct:.0f} % < {policy.ready_battery_pct:g} %",
                battery_pct=whole_pct(pct),
            )
        ]
    return []


def whole_pct(pct: float | None) -> int | None:
    """A percentage as people read it: a charging battery's fractions are no news."""
    return None if pct is None else round(pct)


def storage_free_pct(status: Status) -> float | None:
    """Free share of the recorder's storage, None when unknown or impossible."""
    total, free = status.storage_total_bytes, status.storage_free_bytes
    if not total or free is None or total <= 0 or free > total:
        return None
    return round(100.0 * free / total, 1)


def check_storage(status: Status, policy: PolicySection) -> list[Finding]:
    """Storage findings: unknown or impossible sizes, and too little free space for the next shift."""
    total = status.storage_total_bytes
    if total is None or total <= 0:
        return [warning("storage_unknown", f"recorder storage total is {total!r}")]
    pct = storage_free_pct(status)
    if pct is None:
        return [fault("storage_impossible", "recorder storage values are inconsistent")]
    if pct < policy.ready_free_storage_pct:
        return [
            info(
                "storage_low",
                f"{pct:.0f} % free < {policy.ready_free_storage_pct:g} %",
                storage_free_pct=pct,
            )
        ]
    return []


def check_faults(status: Status) -> list[Finding]:
    """Faults the recorder reports about itself."""
    return [fault("recorder_fault", f"recorder reports: {f}", fault=f) for f in status.faults]


def bay_state(findings: list[Finding], clips_pending: int) -> str:
    """fault, offloading, charging or ready from a docked recorder's findings (SPEC 6 ready rule).

    `charging` covers every wait that needs no one's action: battery below the ready level,
    or recorder storage not yet freed because clips await their upstream ack.
    """
    if any(f.severity == FAULT for f in findings):
        return "fault"
    if clips_pending:
        return "offloading"
    if {f.code for f in findings} & WAITING_CODES:
        return "charging"
    return "ready"


WAITING_CODES = frozenset(
    {
        "battery_charging",
        "battery_unknown",
        "storage_low",
        "storage_unknown",
        "clock_drift",
        "awaiting_ack",
    }
)


# the codes each status refresh works out afresh (a docked recorder's other findings stay)
STATUS_CODES = frozenset(
    {
        "battery_charging",
        "battery_unknown",
        "battery_impossible",
        "storage_low",
        "storage_unknown",
        "storage_impossible",
        "recorder_fault",
        "awaiting_ack",
    }
)


def awaiting_ack(waiting: int) -> list[Finding]:
    """Recorder storage kept because `waiting` clips await the central server's ack."""
    if not waiting:
        return []
    return [info("awaiting_ack", f"{waiting} clips await the central server's ack", clips=waiting)]
