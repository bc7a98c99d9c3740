"""Pure alert policy: disk_low, sync_backlog, clock_unsynced, and raise/clear transitions."""

from __future__ import annotations

from agent.config import PolicySection
from agent.daemon.alerts import (
    CLEAR,
    CLOCK_UNSYNCED,
    DISK_LOW,
    SYNC_BACKLOG,
    clock_unsynced,
    disk_low,
    evaluate,
    sync_backlog,
    transitions,
)
from agent.dock.clock import ClockState

POLICY = PolicySection(disk_low_pct=10.0, sync_backlog_alert_s=3600.0, require_synced_clock=True)
SYNCED = ClockState(True, "timesyncd", "timesyncd: flag present")
UNSYNCED = ClockState(False, "timesyncd", "timesyncd: /run/x is absent (not synchronised)")
UNKNOWN = ClockState(None, "none", "clock_sync_source = none: no time service is asked")


def test_disk_low_below_threshold_only() -> None:
    assert disk_low(5, 100, POLICY)[0][:2] == (DISK_LOW, "warning")
    assert "5.0%" in disk_low(5, 100, POLICY)[0][2]
    assert disk_low(10, 100, POLICY) == []
    assert disk_low(50, 100, POLICY) == []
    assert disk_low(0, 0, POLICY) == []  # unknown size: no claim


def test_sync_backlog_by_age_of_oldest_unsynced() -> None:
    assert sync_backlog(None, POLICY) == []
    assert sync_backlog(3600.0, POLICY) == []
    (cond,) = sync_backlog(7200.0, POLICY)
    assert cond[0] == SYNC_BACKLOG and "7200 s" in cond[2]


def test_clock_unsynced_respects_policy() -> None:
    assert clock_unsynced(SYNCED, POLICY) == []
    assert clock_unsynced(UNSYNCED, POLICY)[0][0] == CLOCK_UNSYNCED
    assert "/run/x is absent" in clock_unsynced(UNSYNCED, POLICY)[0][2]
    assert "cannot be confirmed (clock_sync_source = none" in clock_unsynced(UNKNOWN, POLICY)[0][2]
    relaxed = PolicySection(require_synced_clock=False)
    assert clock_unsynced(UNSYNCED, relaxed) == []


def test_evaluate_collects_all_conditions() -> None:
    codes = [c[0] for c in evaluate(1, 100, 9999.0, UNSYNCED, POLICY)]
    assert codes == [DISK_LOW, SYNC_BACKLOG, CLOCK_UNSYNCED]
    assert evaluate(90, 100, 10.0, SYNCED, POLICY) == []


def test_transitions_raise_new_and_clear_ended() -> None:
    now = evaluate(1, 100, None, SYNCED, POLICY)
    assert [c[0] for c in transitions([], now)] == [DISK_LOW]
    assert transitions([DISK_LOW], now) == []  # already active: nothing to repeat
    cleared = transitions([DISK_LOW, "recorder_fault"], [])
    assert cleared == [(DISK_LOW, CLEAR, "disk_low no longer holds")]  # foreign codes untouched
