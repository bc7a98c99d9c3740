"""A real Prometheus (Debian's) scrapes a dock's /metrics through a docking and a sync (SPEC 12).

The dock offloads a recorder while its broker is down (the queue builds up), then the broker
and the receiver come and every clip syncs. PromQL answers through Prometheus's HTTP API must
equal what the dock's index and custody log hold. The alerting rules of docs/MONITORING.md are
checked by promtool and loaded into the same server.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.config import MqttSection, parse_config
from agent.evidence.custody import iter_entries
from agent.transfer.receiver.server import Receiver
from firmware_interface import simkit
from tests.broker import Broker, free_port, mosquitto_binary
from tests.dock import dock_config, running, settled, wait_for
from tests.tool_cache import prometheus_binary

PROMETHEUS, WHY = prometheus_binary()
pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(PROMETHEUS is None, reason=WHY),
]
RULES = Path(__file__).resolve().parent.parent / "docs" / "monitoring" / "dock-agent.rules.yml"
CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: dock-agent
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
"""


class Prometheus:
    """Debian's prometheus server on a free port, with its own config and storage."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True)
        config = workdir / "prometheus.yml"
        config.write_text(CONFIG.format(rules=RULES, port=target_port))
        self.log = workdir / "prometheus.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=out,
            )
        wait_for(self._ready, 30, "prometheus ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/-/ready", timeout=1).ok
        return False

    def query(self, promql: str) -> float | None:
        """The single value of an instant query, None when it has no result."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        assert len(result) <= 1, (promql, result)
        return float(result[0]["value"][1]) if result else None

    def until(self, promql: str, expected: float, timeout: float = 30) -> None:
        """Wait until `promql` answers `expected` (a scrape every second)."""
        seen: list[float | None] = []

        def ok() -> bool:
            seen.append(self.query(promql))
            return seen[-1] == expected

        try:
            wait_for(ok, timeout, f"{promql} == {expected}")
        except AssertionError:
            raise AssertionError(f"{promql}: wanted {expected}, last {seen[-3:]}") from None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    servers: list[Prometheus] = []

    def start(port: int) -> Prometheus:
        servers.append(Prometheus(tmp_path / "prometheus", port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_the_rules_file_is_valid_and_names_only_metrics_the_dock_exports(tmp_path: Path) -> None:
    promtool, why = prometheus_binary("promtool")
    assert promtool is not None, why
    check = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    from tests.test_ui_metrics import url_of, with_page

    with running(with_page(tmp_path)) as (daemon, _views):
        text = requests.get(url_of(daemon) + "metrics", timeout=10).text
    exported = {re.sub(r"_total$", "", name) for name in re.findall(r"^# TYPE (\S+)", text, re.M)}
    named = {
        re.sub(r"_(total|count|sum|bucket)$", "", name)
        for name in re.findall(r"dock_agent_\w+", RULES.read_text())
    }
    assert named and named <= exported, named - exported


def test_promql_answers_what_the_index_and_custody_log_hold(
    tmp_path: Path, prometheus_for: Any
) -> None:
    broker = Broker(port=free_port(), workdir=tmp_path / "broker")
    broker.workdir.mkdir()
    page = free_port()
    base = dock_config(tmp_path, mqtt={"host": broker.host, "port": broker.port})
    cfg = parse_config(_with_page(base, page))
    start = datetime.now() - timedelta(hours=2)
    rec = simkit.SimRecorder(
        battery_pct=95, clock_offset_s=-4.0, clips=simkit.shift(start, [1, 1, 1])
    )
    originals = simkit.build(tmp_path / "bay1", rec)
    prom = prometheus_for(page)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "the offload, offline")
        prom.until("dock_agent_queue_clips", 3)  # Prometheus saw the backlog
        prom.until("dock_agent_clips_synced_total", 0)
        broker.start()
        receiver = Receiver(
            tmp_path / "central", MqttSection(host=broker.host, port=broker.port), "rx"
        )
        receiver.start()
        try:
            wait_for(lambda: all_synced(daemon, len(originals)), 90, "every clip synced")
            wait_for(lambda: not any(p.exists() for p in originals), 30, "the recorder freed")
            wait_for(lambda: daemon.bays[1].view.state == "ready", 30, "bay 1 ready")
            wait_for(lambda: deleted(daemon) == 3, 30, "the recorder_clip_deleted entries")
            _assert_promql(prom, daemon)
        finally:
            receiver.stop()
    broker.stop()


def all_synced(daemon: Any, count: int) -> bool:
    states = [r["state"] for r in daemon.services.index.iter_all()]
    return states == ["synced"] * count


def _with_page(cfg: Any, port: int) -> dict[str, Any]:
    return {
        "dock": {"id": cfg.dock.id, "data_dir": str(cfg.data_dir)},
        "bay": [{"number": 1, "sim_dir": str(cfg.bay[0].sim_dir)}],
        "policy": {"require_synced_clock": False, "disk_reserve_bytes": 0},
        "mqtt": {  # central's key enrolled (tests/dock.py): receipts free the recorder
            "host": cfg.mqtt.host,
            "port": cfg.mqtt.port,
            "central_key_file": cfg.mqtt.central_key_file,
        },
        "ui": {"listen": f"127.0.0.1:{port}"},
    }


def deleted(daemon: Any) -> int:
    """The recorder_clip_deleted entries in the custody log: the last of a docking's entries."""
    entries = iter_entries(daemon.services.custody.path)
    return sum(e["event"] == "recorder_clip_deleted" for e in entries)


def _assert_promql(prom: Prometheus, daemon: Any) -> None:
    records = list(daemon.services.index.iter_all())
    entries = list(iter_entries(daemon.services.custody.path))
    offloaded = [e for e in entries if e["event"] == "clip_offloaded"]
    synced = {e["sha256"] for e in entries if e["event"] == "clip_synced"}
    seq, _ = daemon.services.custody.head()
    assert len(records) == len(offloaded) == len(synced) == 3
    prom.until("dock_agent_custody_entries_total", seq)
    prom.until("dock_agent_clips_synced_total", len(synced))
    prom.until("dock_agent_queue_clips", 0)
    assert prom.query("dock_agent_clips_offloaded_total") == len(offloaded)
    assert prom.query("dock_agent_offloaded_bytes_total") == sum(r["size"] for r in records)
    assert prom.query("dock_agent_synced_bytes_total") == sum(
        r["size"] for r in records if r["state"] == "synced" and r["clip_id"] in synced
    )
    assert prom.query("max_over_time(dock_agent_queue_clips[10m])") == 3
    assert prom.query("dock_agent_queue_bytes") == 0
    assert prom.query('dock_agent_bay_state{bay="1",state="ready"}') == 1
    assert prom.query("sum(dock_agent_bay_state)") == 1
    assert prom.query("dock_agent_offload_duration_seconds_count") == 1
    offset = prom.query("dock_agent_last_docking_clock_offset_seconds")
    assert offset is not None and abs(offset + 4.0) < 2
    assert prom.query('up{job="dock-agent"}') == 1
    free, now = prom.query("dock_agent_disk_free_bytes"), daemon.services.store.free_bytes()
    assert free is not None and abs(free - now) < 2**30  # the disk is shared: it moves meanwhile
    assert prom.query("dock_agent_alerts_active") == len(daemon.alerts.codes())
    rules = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["health"] for g in rules for r in g["rules"]} == {"ok"}, rules
