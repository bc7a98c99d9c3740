"""GET /metrics (SPEC 12): the dock's figures for Prometheus, read from its own state."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.config import parse_config
from agent.events import Alert, BayView, DockEvent
from agent.evidence.custody import CustodyLog
from agent.ui.metrics import CustodyTally, failure_of
from agent.ui.server import PageServer
from firmware_interface import simkit
from tests.dock import dock_config, running, settled, wait_for


def scrape(url: str, accept: str = "") -> tuple[int, str, dict[str, float]]:
    """(status, content type, {sample name{labels}: value}) of GET /metrics."""
    request = urllib.request.Request(url + "metrics", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            text, kind, code = resp.read().decode(), resp.headers["Content-Type"], resp.status
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return code, kind, samples


def with_page(tmp: Path, name: str = "", **ui: Any) -> Any:
    cfg = dock_config(tmp / name if name else tmp)
    data = {
        "dock": {"id": f"dock-{name or 'test'}", "data_dir": str(cfg.data_dir)},
        "bay": [{"number": 1, "sim_dir": str(cfg.bay[0].sim_dir)}],
        "policy": {"require_synced_clock": False, "disk_reserve_bytes": 0},
        "mqtt": {"port": 1},
        "ui": {"listen": "127.0.0.1:0", **ui},
    }
    return parse_config(data)


def url_of(daemon: Any) -> str:
    return str(next(p for p in daemon.plugins if isinstance(p, PageServer)).url)


def test_a_docking_shows_in_the_metrics_as_the_index_and_custody_log_hold_it(
    tmp_path: Path,
) -> None:
    cfg = with_page(tmp_path)
    start = datetime.now() - timedelta(hours=2)
    rec = simkit.SimRecorder(
        battery_pct=100, clock_offset_s=30.0, clips=simkit.shift(start, [1, 1])
    )
    simkit.build(Path(cfg.bay[0].sim_dir), rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to settle")
        state = daemon.bays[1].view.state
        code, kind, m = scrape(url_of(daemon), "application/openmetrics-text; version=1.0.0")
        records = list(daemon.services.index.iter_all())
        seq, _ = daemon.services.custody.head()
    assert code == 200 and kind.startswith("application/openmetrics-text")
    assert m["dock_agent_clips_offloaded_total"] == len(records) == 2
    assert m["dock_agent_offloaded_bytes_total"] == sum(r["size"] for r in records)
    assert m["dock_agent_clips_synced_total"] == 0  # no broker: nothing reached central
    assert m["dock_agent_custody_entries_total"] == seq > 0
    assert m["dock_agent_queue_clips"] == 2
    assert m["dock_agent_queue_bytes"] == sum(r["size"] for r in records)
    assert m[f'dock_agent_bay_state{{bay="1",state="{state}"}}'] == 1
    assert sum(v for k, v in m.items() if k.startswith("dock_agent_bay_state{")) == 1
    assert abs(m["dock_agent_last_docking_clock_offset_seconds"] - 30.0) < 2
    assert m["dock_agent_offload_duration_seconds_count"] == 1
    assert m['dock_agent_sync_failures_total{reason="sync_failed"}'] == 0
    assert (
        m["dock_agent_disk_free_bytes"] > 0 and m['dock_agent_bay_battery_percent{bay="1"}'] == 100
    )


def test_two_daemons_in_one_process_each_count_their_own(tmp_path: Path) -> None:
    a, b = with_page(tmp_path, "a"), with_page(tmp_path, "b")
    rec = simkit.SimRecorder(clips=simkit.shift(datetime.now() - timedelta(hours=1), [1]))
    simkit.build(Path(a.bay[0].sim_dir), rec)
    with running(a) as (da, va), running(b) as (db, _vb):
        wait_for(lambda: settled(da, va, 1), 60, "dock a to settle")
        _, _, ma = scrape(url_of(da))
        code, kind, mb = scrape(url_of(db))
    assert code == 200 and kind.startswith("text/plain")
    assert (ma["dock_agent_clips_offloaded_total"], mb["dock_agent_clips_offloaded_total"]) == (
        1,
        0,
    )
    assert mb['dock_agent_info{dock="dock-b",version="' + _version() + '"}'] == 1


def _version() -> str:
    from agent import __version__

    return __version__


def test_metrics_off_is_a_404_and_the_page_still_serves(tmp_path: Path) -> None:
    cfg = with_page(tmp_path, metrics=False)
    with running(cfg) as (daemon, _views):
        code, _, _ = scrape(url_of(daemon))
    assert code == 404
    assert parse_config({"dock": {"id": "d"}}).ui.metrics is True


def test_the_custody_tally_reads_only_new_lines_and_starts_over_on_a_new_log(
    tmp_path: Path,
) -> None:
    log = CustodyLog(tmp_path / "custody.jsonl")
    log.append("clip_offloaded", sha256="a" * 64, size=10)
    log.append("clock_checked", offset_s=-3.5)
    tally = CustodyTally(log.path)
    tally.update()
    log.append("clip_offloaded", sha256="b" * 64, size=5)
    log.append("clip_synced", sha256="a" * 64)
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq": 5, "event": "clip_off')  # a line being written counts next time
    tally.update()
    assert (tally.entries, tally.offloaded, tally.offloaded_bytes) == (4, 2, 15)
    assert (tally.synced, tally.synced_bytes, tally.last_clock_offset_s) == (1, 10, -3.5)
    log.close()
    (tmp_path / "custody.jsonl").write_bytes(b"")
    tally.update()
    assert (tally.entries, tally.offloaded, tally.synced) == (0, 0, 0)


def test_failures_by_reason() -> None:
    assert failure_of(DockEvent("fault", {"bay": 1, "code": "mount_failed"})) == (
        "offload",
        "mount_failed",
    )
    assert failure_of(Alert("disk_full", "critical", "x")) == ("offload", "disk_full")
    assert failure_of(Alert("sync_failed", "warning", "x", {"one_off": True})) == (
        "sync",
        "sync_failed",
    )
    assert failure_of(Alert("receipt_invalid", "error", "x")) == ("sync", "receipt_invalid")
    assert failure_of(Alert("receipt_invalid", "warning", "forged, acked anyway")) is None
    assert failure_of(Alert("disk_low", "clear", "x")) is None
    assert failure_of(BayView(1, state="fault")) is None
