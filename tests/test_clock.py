"""The dock's clock truth from its time service (timesyncd's flag, chronyc), never adjtimex."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from agent.dock.clock import (
    TIMESYNCD_FLAG,
    ClockSource,
    ClockState,
    chrony_state,
    parse_tracking,
)

# `chronyc -c tracking` lines in chrony's CSV layout (client.c, process_cmd_tracking).
SYNCED_LINE = (
    "C0A80001,192.168.0.1,3,1764550000.123456789,-0.000012345,0.000001234,0.000023456,"
    "-12.345,0.001,0.023,0.012345678,0.000987654,64.5,Normal"
)
UNSYNCED_LINE = (
    "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,"
    "1.000000000,1.000000000,0.0,Not synchronised"
)
LOCAL_LINE = SYNCED_LINE.replace("C0A80001,192.168.0.1,3", "7F7F0101,,10")


def test_chrony_tracking_lines() -> None:
    assert parse_tracking(SYNCED_LINE) == ClockState(
        True, "chrony", "chrony: synchronised to 192.168.0.1 (stratum 3)"
    )
    unsynced = parse_tracking(UNSYNCED_LINE)
    assert unsynced.synced is False and "Not synchronised" in unsynced.reason
    assert parse_tracking(SYNCED_LINE.replace("Normal", "Insert second")).synced is True
    local = parse_tracking(LOCAL_LINE)
    assert local.synced is False and "no external reference" in local.reason
    garbled = parse_tracking("506 Cannot talk to daemon")
    assert garbled.synced is None and "unexpected output" in garbled.reason


def fake_chronyc(tmp: Path, out: str, code: int = 0) -> str:
    """An executable that answers like chronyc (the time service is the hardware edge here)."""
    script = tmp / "chronyc"
    script.write_text(
        f"#!/bin/sh\necho '{out}'\n[ {code} -eq 0 ] || echo 'no daemon' >&2\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_chronyc_is_run_and_failures_are_unknown_not_errors(tmp_path: Path) -> None:
    assert chrony_state(fake_chronyc(tmp_path, SYNCED_LINE)).synced is True
    failed = chrony_state(fake_chronyc(tmp_path, "", code=1))
    assert failed.synced is None and "no daemon" in failed.reason
    missing = chrony_state(str(tmp_path / "nowhere" / "chronyc"))
    assert missing.synced is None and "not installed" in missing.reason


def test_timesyncd_flag_present_absent(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    source = ClockSource("timesyncd", flag=flag, cache_s=0)
    absent = source.state()
    assert absent.synced is False and absent.source == "timesyncd" and str(flag) in absent.reason
    flag.parent.mkdir()
    flag.touch()
    assert source.state() == ClockState(True, "timesyncd", f"timesyncd: {flag} present")


def test_auto_prefers_timesyncd_then_chrony_then_none(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    chronyc = fake_chronyc(tmp_path, SYNCED_LINE)
    nothing = ClockSource("auto", flag=flag, chronyc=str(tmp_path / "no-chronyc"), cache_s=0)
    assert nothing.state().source == "none" and nothing.state().synced is None
    assert ClockSource("auto", flag=flag, chronyc=chronyc, cache_s=0).state().source == "chrony"
    flag.parent.mkdir()  # timesyncd runs, not yet synchronised, and chrony is not installed
    waiting = ClockSource("auto", flag=flag, chronyc=str(tmp_path / "no-chronyc"), cache_s=0)
    assert waiting.state().source == "timesyncd" and waiting.state().synced is False
    flag.touch()
    assert ClockSource("auto", flag=flag, chronyc=chronyc, cache_s=0).state().source == "timesyncd"


def test_none_is_never_synced_and_bad_names_refused() -> None:
    assert ClockSource("none").state().synced is None
    with pytest.raises(ValueError, match="expected one of auto, timesyncd, chrony, none"):
        ClockSource("ntpd")


def test_answer_is_cached_briefly(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    source = ClockSource("timesyncd", flag=flag, cache_s=60)
    assert source.synced() is False
    flag.touch()
    assert source.synced() is False  # within cache_s: the service is not asked again
    source.cache_s = 0
    assert source.synced() is True


def test_this_machine_gets_the_answer_its_time_service_gives() -> None:
    """`auto` on this machine says what its timesyncd flag or chronyc says (looked at here)."""
    state = ClockSource("auto").state()
    if TIMESYNCD_FLAG.exists():
        assert state == ClockState(True, "timesyncd", f"timesyncd: {TIMESYNCD_FLAG} present")
    elif shutil.which("chronyc"):
        assert state.source == "chrony" and state.synced == chrony_state("chronyc").synced
    elif TIMESYNCD_FLAG.parent.is_dir():
        assert (state.synced, state.source) == (False, "timesyncd")
        assert str(TIMESYNCD_FLAG) in state.reason
    else:
        assert (state.synced, state.source) == (None, "none")
        assert "no time service found" in state.reason
