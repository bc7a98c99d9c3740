"""Alert conditions of the dock itself (disk, sync backlog, clock), as pure functions of numbers.

Each check returns the conditions that hold now as (code, severity, message) tuples. The
daemon emits them as `Alert`s and, through `transitions`, a `clear` for a condition that
ended, so that the active set in R/status follows the truth (see agent.mqtt.status).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.config import PolicySection
from agent.dock.clock import ClockState

Condition = tuple[str, str, str]  # (code, severity, message)

DISK_LOW = "disk_low"
SYNC_BACKLOG = "sync_backlog"
CLOCK_UNSYNCED = "clock_unsynced"
DELETES_HELD = "deletes_held"
MANAGED = frozenset({DISK_LOW, SYNC_BACKLOG, CLOCK_UNSYNCED, DELETES_HELD})
CLEAR = "clear"


def disk_low(free_bytes: int, total_bytes: int, policy: PolicySection) -> list[Condition]:
    """disk_low when the store's free share is below policy.disk_low_pct."""
    if total_bytes <= 0:
        return []
    free_pct = 100.0 * free_bytes / total_bytes
    if free_pct >= policy.disk_low_pct:
        return []
    return [
        (
            DISK_LOW,
            "warning",
            f"evidence store has {free_pct:.1f}% free ({free_bytes} bytes), "
            f"below {policy.disk_low_pct:g}%",
        )
    ]


def sync_backlog(oldest_unsynced_age_s: float | None, policy: PolicySection) -> list[Condition]:
    """sync_backlog when the oldest unsynced clip is older than policy.sync_backlog_alert_s."""
    if oldest_unsynced_age_s is None or oldest_unsynced_age_s <= policy.sync_backlog_alert_s:
        return []
    return [
        (
            SYNC_BACKLOG,
            "warning",
            f"oldest unsynced clip is {oldest_unsynced_age_s:.0f} s old, "
            f"more than {policy.sync_backlog_alert_s:g} s",
        )
    ]


def clock_unsynced(clock: ClockState, policy: PolicySection) -> list[Condition]:
    """clock_unsynced when the dock's clock is not (known to be) synchronised and policy requires it."""
    if clock.synced or not policy.require_synced_clock:
        return []
    state = "is not synchronised" if clock.synced is False else "cannot be confirmed"
    return [
        (
            CLOCK_UNSYNCED,
            "warning",
            f"the dock's clock {state} ({clock.reason}): recorder clocks are measured and "
            "noted, not corrected",
        )
    ]


def deletes_held(reason: str | None) -> list[Condition]:
    """deletes_held while recorders are not freed for want of a way to verify central's receipts."""
    return [] if reason is None else [(DELETES_HELD, "warning", reason)]


def evaluate(
    free_bytes: int,
    total_bytes: int,
    oldest_unsynced_age_s: float | None,
    clock: ClockState,
    policy: PolicySection,
    held: str | None = None,
) -> list[Condition]:
    """Every dock condition that holds now (`held`: why deletions are held, if they are)."""
    return (
        disk_low(free_bytes, total_bytes, policy)
        + sync_backlog(oldest_unsynced_age_s, policy)
        + clock_unsynced(clock, policy)
        + deletes_held(held)
    )


def transitions(
    active: Iterable[str], now: list[Condition], managed: Iterable[str] = MANAGED
) -> list[Condition]:
    """What to emit: conditions not yet active, and a `clear` for managed codes that ended."""
    active_set = set(active)
    current = {code for code, _sev, _msg in now}
    raised = [c for c in now if c[0] not in active_set]
    ended = sorted((active_set & set(managed)) - current)
    return raised + [(code, CLEAR, f"{code} no longer holds") for code in ended]
