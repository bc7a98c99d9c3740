"""The command line while the daemon runs: status, clips --json, notes, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from agent.evidence.record import MANIFEST_FIELDS
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for
from tests.test_notes import SPEC_KEYS


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120
    )


def test_status_clips_and_notes_while_the_daemon_runs(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path, bays=2)
    config_file = tmp_path / "dock.toml"
    config_file.write_text(config_toml(cfg))
    start = datetime.now() - timedelta(hours=1)
    rec = simkit.SimRecorder(
        battery_pct=50,
        clips=[simkit.SimClip(start, 2), simkit.SimClip(start + timedelta(seconds=30), 2)],
    )
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 finished")
        wait_for(
            lambda: (
                json.loads(cli("status", "-c", str(config_file), "--json").stdout)["bays"]["1"][
                    "state"
                ]
                == "charging"
            ),
            10,
            "state file",
        )
        status = json.loads(cli("status", "-c", str(config_file), "--json").stdout)
        text = cli("status", "-c", str(config_file)).stdout
        clips = json.loads(cli("clips", "-c", str(config_file), "--json").stdout)
        only = json.loads(
            cli("clips", "-c", str(config_file), "--json", "--device", "nobody").stdout
        )
        notes = json.loads(cli("notes", "list", "--json", "-c", str(config_file)).stdout)
    assert status["daemon_running"] is True
    assert status["bays"]["1"]["device_id"] == rec.device_id
    assert status["bays"]["2"]["state"] == "empty"
    assert status["queue"]["clips"] == 2 and status["queue"]["bytes"] > 0
    assert status["custody_head"]["seq"] > 0
    assert "bay 1: CHARGING" in text and "sync queue: 2 clips" in text
    assert len(clips) == 2 and only == []
    for clip in clips:
        assert set(MANIFEST_FIELDS) | {"clip_id", "state", "local_path"} <= set(clip)
        assert clip["state"] == "offloaded" and Path(clip["local_path"]).exists()
    gap = [n for n in notes if n["type"] == "gap"]
    assert len(gap) == 1 and 27 <= gap[0]["duration_s"] <= 29
    assert set(gap[0]) == SPEC_KEYS


def test_usage_errors_exit_2() -> None:
    assert cli("frobnicate").returncode == 2
    assert cli("export").returncode == 2


def test_status_says_why_a_bay_is_still_identifying() -> None:
    from agent.commands.status import _bay_line

    waiting = {"severity": "info", "code": "zfy_waiting_for_sdk", "message": "waiting: bay 2"}
    drift = {"severity": "info", "code": "clock_corrected", "message": "clock corrected"}
    assert "waiting: bay 2" in _bay_line("1", {"state": "identifying", "findings": [waiting]})
    assert "clock corrected" not in _bay_line("1", {"state": "offloading", "findings": [drift]})
