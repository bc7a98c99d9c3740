"""Validation policy (pure): clock, battery, storage findings and the ready rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.analysis.late_offload import is_late
from agent.config import PolicySection
from agent.dock.checks import awaiting_ack, bay_state, check_battery, check_clock, check_storage
from agent.dock.clock import ClockState
from agent.evidence.naming import parse_name
from firmware_interface.base import Capabilities, Status

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
POLICY = PolicySection()
SYNCED = ClockState(True, "timesyncd", "timesyncd: flag present")
UNSYNCED = ClockState(False, "chrony", "chrony: leap status 'Not synchronised'")


def local(offset_s: float) -> datetime:
    return (NOW + timedelta(seconds=offset_s)).astimezone(TZ).replace(tzinfo=None)


def test_drift_of_47_s_is_measured_and_set_when_clock_synced() -> None:
    v = check_clock(Status(clock=local(47)), Capabilities(), NOW, TZ, POLICY, dock_clock=SYNCED)
    assert v.offset_s == 47.0 and v.set_clock
    assert [f.code for f in v.findings] == ["clock_drift"]


def test_drift_not_set_when_dock_clock_unsynced() -> None:
    v = check_clock(Status(clock=local(-30)), Capabilities(), NOW, TZ, POLICY, dock_clock=UNSYNCED)
    assert v.offset_s == -30.0 and not v.set_clock
    assert {f.code for f in v.findings} == {"clock_drift", "clock_unsynced"}
    (unsynced,) = [f for f in v.findings if f.code == "clock_unsynced"]
    assert unsynced.detail == {"source": "chrony", "reason": UNSYNCED.reason}
    assert "leap status 'Not synchronised'" in unsynced.message


def test_small_drift_within_tolerance_is_left_alone() -> None:
    v = check_clock(Status(clock=local(1.5)), Capabilities(), NOW, TZ, POLICY, dock_clock=SYNCED)
    assert v.offset_s == 1.5 and not v.set_clock and v.findings == []


def test_clock_in_1970_is_a_fault_not_a_crash() -> None:
    v = check_clock(Status(clock=datetime(1970, 1, 1)), Capabilities(), NOW, TZ, POLICY, SYNCED)
    assert v.offset_s is None
    assert v.findings[0].code == "clock_impossible" and v.findings[0].severity == "fault"


def test_unreadable_clock_is_set_but_unverifiable() -> None:
    caps = Capabilities(read_clock=False)
    v = check_clock(Status(clock=None), caps, NOW, TZ, POLICY, dock_clock=SYNCED)
    assert v.set_clock and v.offset_s is None and v.findings[0].code == "clock_unverifiable"


def test_battery_findings() -> None:
    assert check_battery(Status(battery_pct=250), POLICY)[0].code == "battery_impossible"
    assert check_battery(Status(battery_pct=64), POLICY)[0].code == "battery_charging"
    assert check_battery(Status(battery_pct=95), POLICY) == []


def test_storage_findings() -> None:
    assert (
        check_storage(Status(storage_total_bytes=100, storage_free_bytes=50), POLICY)[0].code
        == "storage_low"
    )
    assert (
        check_storage(Status(storage_total_bytes=100, storage_free_bytes=500), POLICY)[0].code
        == "storage_impossible"
    )
    assert check_storage(Status(storage_total_bytes=100, storage_free_bytes=95), POLICY) == []


def test_ready_rule() -> None:
    ok = Status(battery_pct=95, storage_total_bytes=100, storage_free_bytes=95)
    findings = check_battery(ok, POLICY) + check_storage(ok, POLICY)
    assert bay_state(findings, clips_pending=0) == "ready"
    assert bay_state(findings, clips_pending=2) == "offloading"
    low = check_battery(Status(battery_pct=50), POLICY)
    assert bay_state(low, 0) == "charging"
    assert bay_state(check_battery(Status(battery_pct=-5), POLICY), 0) == "fault"


def test_24_hour_rule_boundaries() -> None:
    end = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert not is_late(end, end + timedelta(hours=24), 24)
    assert is_late(end, end + timedelta(hours=24, seconds=1), 24)
    assert is_late(end, end + timedelta(hours=30), 24)


def test_file_name_parsing() -> None:
    p = parse_name("ZFY0012345_012345_20261121091403_0007.MP4")
    assert p and p.device_id == "ZFY0012345" and p.officer_id == "012345"
    assert p.start_local == datetime(2026, 11, 21, 9, 14, 3) and p.seq == 7
    assert parse_name("IMG_0001.MP4") is None
    assert parse_name("ZFY1_1_20261341091403_1.MP4") is None  # month 13


def test_clips_awaiting_the_ack_keep_the_bay_charging_and_say_how_many() -> None:
    assert awaiting_ack(0) == []
    (finding,) = awaiting_ack(3)
    assert finding.code == "awaiting_ack" and "3 clips" in finding.message
    assert bay_state([finding], 0) == "charging"
