"""SIGHUP re-reads the configuration: valid changes apply mid-offload, broken ones are refused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from agent.config import parse_config
from agent.daemon.reload import changed_keys, plan_reload, reloadable
from agent.evidence.custody import iter_entries, verify_chain
from agent.evidence.index import ClipIndex
from firmware_interface import simkit
from tests.dock import CLOSED_PORT, dock_config, running, wait_for

BASE = {
    "dock": {"id": "dock-hup", "data_dir": "/tmp/x"},
    "bay": [{"number": 1, "sim_dir": "/tmp/b1"}],
    "mqtt": {"port": 1},
}


def test_plan_keeps_restart_only_keys_and_applies_the_rest() -> None:
    old = parse_config(BASE)
    new = parse_config(
        {
            "dock": {"id": "dock-other", "data_dir": "/tmp/x", "log_level": "debug"},
            "bay": [{"number": 2, "sim_dir": "/tmp/b2"}],
            "policy": {"ready_battery_pct": 50, "timezone": "Asia/Shanghai"},
            "mqtt": {"port": 2, "rate_limit_bytes_per_s": 1000},
        }
    )
    plan = plan_reload(old, new)
    assert sorted(plan.applied) == [
        "dock.log_level",
        "mqtt.rate_limit_bytes_per_s",
        "policy.ready_battery_pct",
    ]
    assert sorted(plan.need_restart) == ["bay", "dock.id", "mqtt.port", "policy.timezone"]
    eff = plan.effective
    assert (eff.dock.id, eff.bay, eff.mqtt.port, eff.policy.timezone) == (
        "dock-hup",
        old.bay,
        1,
        "",
    )
    assert (eff.dock.log_level, eff.policy.ready_battery_pct) == ("debug", 50.0)
    assert eff.mqtt.rate_limit_bytes_per_s == 1000
    assert changed_keys(old, old) == []
    assert reloadable("retention.rule") and not reloadable("recorders.mount_dir")


def config_text(tmp: Path, **policy: object) -> str:
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in policy.items())
    return (
        f'[dock]\nid = "dock-hup"\ndata_dir = "{tmp / "data"}"\n'
        f'[[bay]]\nnumber = 1\nsim_dir = "{tmp / "bay1"}"\n'
        "[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
        f'delete_from_recorder = "after_local_verify"\n{lines}'
        "[mqtt]\nport = 1\n"  # no broker: the dock works offline
    )


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(cfg)], stdout=out, stderr=out, env=env
        )


def bay_view(data: Path) -> dict:
    try:
        return json.loads((data / "state" / "bays.json").read_text())["bays"].get("1", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def big_recorder(bay: Path) -> dict[str, str]:
    """A recorder with small clips first and 6 x 48 MiB after them: offload takes a while."""
    now = datetime.now()
    rec = simkit.SimRecorder(clips=simkit.shift(now - timedelta(hours=3), [1, 1]), battery_pct=64)
    originals = simkit.build(bay, rec, docked=False)
    for i in range(6):
        big = (
            bay
            / "DCIM"
            / "100MEDIA"
            / f"{rec.device_id}_{rec.officer_id}_{now:%Y%m%d%H%M%S}_9{i}.MP4"
        )
        big.write_bytes(os.urandom(48 * 2**20))
        originals.append(big)
    simkit.dock(bay, rec)
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in originals}


def test_valid_reload_applies_while_offloading_and_loses_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "dock.toml"
    cfg.write_text(config_text(tmp_path))
    log = tmp_path / "agent.log"
    proc = start(cfg, log)
    try:
        expected = big_recorder(tmp_path / "bay1")
        wait_for(lambda: "offloaded " in log.read_text(), 60, "the first clip offloaded")
        # the bay's view is written a moment after its log line
        wait_for(lambda: bay_view(tmp_path / "data").get("state") == "offloading", 10, "offloading")
        before = bay_view(tmp_path / "data")
        assert "battery_charging" in {f["code"] for f in before["findings"]}  # 64 % < 90 %
        cfg.write_text(
            config_text(tmp_path, ready_battery_pct=50)
            .replace("port = 1", "port = 2")
            .replace('id = "dock-hup"', 'id = "dock-hup"\nlog_level = "debug"')
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: " in log.read_text(), 10, "the reload")
        wait_for(lambda: bay_view(tmp_path / "data").get("state") == "ready", 120, "bay ready")
        assert proc.poll() is None, "SIGHUP must not end the daemon"
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    reload_at = text.index("reload: ")
    assert "offloaded " in text[reload_at:], "the reload came while the offload was under way"
    assert "policy.ready_battery_pct" in text[reload_at:] and "dock.log_level" in text[reload_at:]
    assert "mqtt.port changed; it takes effect after a restart" in text
    assert " DEBUG " in text[reload_at:] and " DEBUG " not in text[:reload_at]
    data = tmp_path / "data"
    index = ClipIndex(data)
    try:
        stored = {r["sha256"]: r for r in index.iter_all()}
    finally:
        index.close()
    assert {h: r["file_name"] for h, r in stored.items()} == expected
    for digest, record in stored.items():
        assert hashlib.sha256(Path(record["local_path"]).read_bytes()).hexdigest() == digest
    assert verify_chain(data / "custody.jsonl") == []
    offloaded = [e for e in iter_entries(data / "custody.jsonl") if e["event"] == "clip_offloaded"]
    assert len(offloaded) == len(expected)


def test_broken_config_is_refused_line_by_line_and_the_old_one_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "dock.toml"
    good = config_text(tmp_path)
    cfg.write_text(good)
    log = tmp_path / "agent.log"
    proc = start(cfg, log)
    try:
        wait_for(lambda: bay_view(tmp_path / "data").get("state") == "empty", 30, "daemon up")
        broken = good.replace(
            "[policy]\n", "[policy]\ngap_treshold_s = 3\nready_battery_pct = 250\n"
        )
        cfg.write_text(broken.replace('id = "dock-hup"', 'id = "dock-hup"\nlog_level = "loud"'))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log.read_text().count("reload refused") >= 3, 10, "the refusal")
        assert proc.poll() is None, "a broken config must not end the daemon"  # see the offload
        refused = [line for line in log.read_text().splitlines() if "reload refused" in line]
        assert len(refused) == 3, refused
        assert any("policy.gap_treshold_s: unknown key" in line for line in refused)
        assert any("policy.ready_battery_pct = 250" in line for line in refused)
        assert any("dock.log_level = 'loud'" in line for line in refused)
        now = datetime.now()  # still working, on the old configuration
        rec = simkit.SimRecorder(clips=simkit.shift(now - timedelta(hours=1), [1]), battery_pct=95)
        simkit.build(tmp_path / "bay1", rec)
        wait_for(lambda: bay_view(tmp_path / "data").get("state") == "ready", 60, "an offload")
        assert proc.poll() is None, "a broken config must not end the daemon"
    finally:
        assert stop(proc) == 0
    assert "Traceback" not in log.read_text()


def test_a_reload_reaches_every_running_part(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    with running(cfg) as (daemon, _views):
        new = dock_config(
            tmp_path,
            mqtt={"port": CLOSED_PORT, "rate_limit_bytes_per_s": 4096},
            ready_battery_pct=50.0,
            clock_sync_source="none",
            disk_reserve_bytes=12345,
        )
        new = replace(new, retention=replace(new.retention, purge_interval_s=7.0))
        plan = daemon.reload(new)
        parts = daemon.parts
        assert parts is not None
        assert daemon.services.cfg.policy.ready_battery_pct == 50.0
        assert daemon.services.clock().source == "none"
        assert daemon.services.store.reserve_bytes == 12345
        assert parts.purger.interval_s == 7.0
        assert parts.sync.sender.settings.rate_limit_bytes_per_s == 4096
        assert plan.need_restart == []
