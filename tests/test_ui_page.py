"""The status page server (SPEC 12): the page, /api/status = `status --json`, read-only, config."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.schema import ConfigError
from agent.ui.page import render_page
from agent.ui.server import PageServer
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=b"x" if method != "GET" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def page_server(cfg: Any, daemon: Any) -> PageServer:
    return next(p for p in daemon.plugins if isinstance(p, PageServer))


def without_clock(status: dict[str, Any]) -> dict[str, Any]:
    """The status less what moves by itself: an age and a view's time."""
    bays = {n: {k: v for k, v in b.items() if k != "ts"} for n, b in status["bays"].items()}
    return {**status, "bays": bays, "queue": {**status["queue"], "oldest_unsynced_age_s": None}}


def test_api_status_is_what_status_json_prints_and_never_a_dock_path(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    cfg = parse_config({**_as_data(cfg), "ui": {"listen": "127.0.0.1:0"}})
    rec = simkit.SimRecorder(
        battery_pct=100, clips=[simkit.SimClip(datetime.now() - timedelta(hours=1), 1)]
    )  # a full battery: nothing in the bay's view moves by itself
    simkit.build(tmp_path / "bay1", rec)
    (tmp_path / "dock.toml").write_text(config_toml(cfg))
    with running(cfg) as (daemon, views):
        url = page_server(cfg, daemon).url
        assert url and url.startswith("http://127.0.0.1:")
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 to settle")
        final = daemon.bays[1].view.state
        wait_for(lambda: json.loads(get(url + "api/status")[2])["bays"]["1"]["state"] == final)
        latest = json.loads(json.dumps(views.latest(1).to_json()))  # type: ignore[union-attr]
        state = cfg.data_dir / "state" / "bays.json"
        wait_for(lambda: json.loads(state.read_text())["bays"]["1"] == latest, 10, "the flush")
        code, headers, body = get(url + "api/status")
        cli = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--json", "-c", str(tmp_path / "dock.toml")],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        record = next(daemon.services.index.iter_all())
        clip = get(url + record["local_path"].lstrip("/"))
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    served = json.loads(body)
    assert without_clock(served) == without_clock(json.loads(cli.stdout))
    assert served["bays"]["1"]["device_id"] == rec.device_id
    assert str(cfg.data_dir) not in body.decode() and "local_path" not in body.decode()
    assert clip[0] == 404 and record["sha256"] not in clip[2].decode()


def _as_data(cfg: Any) -> dict[str, Any]:
    """A test config back as the TOML tables it came from (enough for dock_config's keys)."""
    import tomllib

    return tomllib.loads(config_toml(cfg))


def test_the_page_is_one_self_contained_document(tmp_path: Path) -> None:
    server = PageServer("127.0.0.1:0", render_page("dock-01", "zh-CN"), lambda: {"bays": {}})
    server.start()
    try:
        assert server.url
        code, headers, body = get(server.url)
        head = get(server.url, "HEAD")
    finally:
        server.stop()
    page = body.decode()
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert head[0] == 200 and head[2] == b""
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "就绪" in page and "api/status" in page and "dock-01" in page
    for external in ("http://", "https://", "<link", " src=", "@import", "url("):
        assert external not in page, external


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_page_is_read_only(method: str) -> None:
    calls: list[int] = []
    server = PageServer("127.0.0.1:0", "<p>x</p>", lambda: calls.append(1) or {})  # type: ignore[func-returns-value]
    server.start()
    try:
        assert server.url
        code, headers, _ = get(server.url + "api/status", method)
        missing = get(server.url + "../../etc/passwd")[0], get(server.url + "evidence/")[0]
    finally:
        server.stop()
    assert code == 405 and headers["Allow"] == "GET, HEAD" and calls == []
    assert missing == (404, 404)


def test_a_taken_port_leaves_the_daemon_without_a_page_not_down(caplog: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = PageServer(f"127.0.0.1:{port}", "<p>x</p>", dict)
        server.start()
        server.stop()
    assert server.url is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text


@pytest.mark.logs_exception(reason="the failing status is logged with its traceback")
def test_a_failing_status_is_a_500_not_a_dead_server(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("index gone")

    server = PageServer("127.0.0.1:0", "<p>x</p>", broken)
    server.start()
    try:
        assert server.url
        first = get(server.url + "api/status")
        page = get(server.url)
    finally:
        server.stop()
    assert first[0] == 500 and page[0] == 200
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert "index gone" in str(logged.exc_info[1] if logged.exc_info else "")


def test_listen_empty_serves_no_page(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    with running(cfg) as (daemon, _views):
        assert not [p for p in daemon.plugins if isinstance(p, PageServer)]


@pytest.mark.parametrize(
    ("ui", "needle"),
    [
        ({"listen": "8080"}, "ui.listen = '8080': expected HOST:PORT"),
        ({"listen": "127.0.0.1:70000"}, "ui.listen = '127.0.0.1:70000': expected HOST:PORT"),
        ({"listen": "http://x:80"}, "ui.listen = 'http://x:80': expected HOST:PORT"),
        ({"language": "fr"}, "ui.language = 'fr': expected one of zh-CN, en"),
        ({"lang": "en"}, "ui.lang: unknown key"),
    ],
)
def test_bad_ui_settings_are_named(ui: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"dock": {"id": "d"}, "ui": ui})
    assert any(p.startswith(needle) for p in err.value.problems), err.value.problems


def test_ui_defaults_and_a_bad_discovery_prefix() -> None:
    cfg = parse_config({"dock": {"id": "d"}})
    assert (cfg.ui.listen, cfg.ui.language) == ("127.0.0.1:8080", "zh-CN")
    assert cfg.mqtt.ha_discovery_prefix == "homeassistant"
    with pytest.raises(ConfigError) as err:
        parse_config({"dock": {"id": "d"}, "mqtt": {"ha_discovery_prefix": "ha/#"}})
    assert err.value.problems[0].startswith("mqtt.ha_discovery_prefix = 'ha/#': expected a topic")
