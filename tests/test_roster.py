"""Officer roster over real HTTP: filling, disagreeing, conditional requests, offline cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.config import CentralSection
from agent.dock.roster import OFFICER_FROM_ROSTER, OFFICER_MISMATCH, Assignment, Roster
from firmware_interface import simkit
from firmware_interface.base import Identity
from tests.dock import dock_config, running, settled, wait_for

ROSTER = {
    "version": 1,
    "generated_at": "2026-11-21T08:00:00+08:00",
    "devices": {
        "ZFY0012345": {"officer_id": "012345", "officer_name": "张三", "unit_no": "410000"},
        "ZFY0099999": {"officer_id": "099999", "officer_name": "王五", "unit_no": "410001"},
        "ZFYBROKEN": {"officer_name": "no id"},
    },
}


class RosterServer:
    """A real HTTP server on 127.0.0.1 serving a roster with an ETag."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.requests: list[dict[str, str]] = []
        self.not_modified = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests.append(dict(self.headers))
                body = json.dumps(owner.doc, ensure_ascii=False).encode("utf-8")
                etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
                if self.headers.get("If-None-Match") == etag:
                    owner.not_modified += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/roster.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Shut the server down and free its port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[RosterServer]:
    srv = RosterServer(ROSTER)
    yield srv
    srv.stop()


def central(url: str, **over: Any) -> CentralSection:
    """Roster settings for `url` with short timeouts."""
    return CentralSection(roster_url=url, roster_timeout_s=2.0, **over)


def test_roster_fills_missing_officer_and_flags_a_disagreement(
    server: RosterServer, tmp_path: Path
) -> None:
    roster = Roster(central(server.url), tmp_path)
    assert roster.refresh() == "updated"
    assert len(roster) == 2  # the entry without officer_id is ignored

    filled = roster.apply(Identity("ZFY0012345"))
    assert filled.identity.officer_id == "012345" and filled.identity.officer_name == "张三"
    assert filled.flags == [OFFICER_FROM_ROSTER]

    other = roster.apply(Identity("ZFY0012345", officer_id="054321", officer_name="赵六"))
    assert other.identity.officer_id == "054321" and other.identity.officer_name == "赵六"
    assert other.flags == [OFFICER_MISMATCH]
    assert other.fields["roster_officer_id"] == "012345"

    agree = roster.apply(Identity("ZFY0012345", officer_id="012345"))
    assert agree.flags == [] and agree.identity.unit_no == "410000"
    assert roster.apply(Identity("ZFY-UNKNOWN", officer_id="1")).flags == []


def test_conditional_requests_get_304_and_keep_the_roster(
    server: RosterServer, tmp_path: Path
) -> None:
    roster = Roster(central(server.url), tmp_path)
    assert roster.refresh() == "updated"
    assert roster.refresh() == "not_modified"
    assert server.not_modified == 1 and server.requests[-1]["If-None-Match"] == roster.etag
    assert roster.lookup("ZFY0099999") == Assignment("099999", "王五", "410001")

    server.doc = {"devices": {"ZFY0099999": {"officer_id": "011111"}}}
    assert roster.refresh() == "updated"
    assert roster.lookup("ZFY0099999") == Assignment("011111")
    assert roster.lookup("ZFY0012345") is None


def test_offline_dock_uses_the_cached_roster(tmp_path: Path) -> None:
    server = RosterServer(ROSTER)
    online = Roster(central(server.url), tmp_path)
    assert online.refresh() == "updated"
    cached = json.loads((tmp_path / "roster.json").read_text(encoding="utf-8"))
    assert cached["url"] == server.url and cached["roster"] == ROSTER
    server.stop()

    offline = Roster(central(server.url, roster_refresh_s=3600), tmp_path)
    offline.start()
    try:
        assert offline.lookup("ZFY0012345") == Assignment("012345", "张三", "410000")
        assert offline.refresh() == "failed"
        assert offline.apply(Identity("ZFY0012345")).identity.officer_name == "张三"
    finally:
        offline.stop()


def test_a_malformed_roster_keeps_the_last_good_one(server: RosterServer, tmp_path: Path) -> None:
    roster = Roster(central(server.url), tmp_path)
    assert roster.refresh() == "updated"
    server.doc = ["not", "a", "roster"]
    assert roster.refresh() == "failed"
    assert roster.lookup("ZFY0012345") is not None
    assert json.loads((tmp_path / "roster.json").read_text(encoding="utf-8"))["roster"] == ROSTER


def test_docked_recorder_records_carry_the_roster_finding(
    server: RosterServer, tmp_path: Path
) -> None:
    cfg = dock_config(tmp_path)
    cfg = replace(cfg, central=central(server.url))
    cfg.data_dir.mkdir(parents=True)
    # The daemon starts from the cached roster; its thread refreshes it in the background.
    assert Roster(cfg.central, cfg.data_dir).refresh() == "updated"
    start = datetime.now() - timedelta(minutes=30)
    rec = simkit.SimRecorder(officer_id="054321", clips=simkit.shift(start, [1.0]))
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 30, "bay 1 settled")
        wait_for(lambda: server.not_modified >= 1, 10, "the plugin's conditional refresh")
        records = daemon.services.index.active()
    assert len(records) == 1
    record = records[0]
    assert record["officer_id"] == "054321" and record["roster_officer_id"] == "012345"
    assert OFFICER_MISMATCH in record["flags"]
