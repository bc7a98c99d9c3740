"""sd_notify over a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from agent.daemon import sdnotify
from tests.dock import wait_for


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    folder = tempfile.mkdtemp(prefix="sdn")  # short: AF_UNIX paths are limited to 108 bytes
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    shutil.rmtree(folder)


def received(sock: socket.socket, window: float) -> list[str]:
    """Every datagram arriving within `window` seconds."""
    out = []
    deadline = time.monotonic() + window
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


def test_ready_and_status_arrive(notify_socket: socket.socket) -> None:
    assert sdnotify.ready("3 bays\nidle")
    assert notify_socket.recv(4096).decode() == "READY=1\nSTATUS=3 bays idle"
    assert sdnotify.status("offloading bay 2")
    assert notify_socket.recv(4096).decode() == "STATUS=offloading bay 2"
    assert sdnotify.stopping()
    assert notify_socket.recv(4096).decode() == "STOPPING=1"


def test_fallback_sender_without_systemd_python(notify_socket: socket.socket) -> None:
    assert sdnotify.send_datagram("READY=1")
    assert notify_socket.recv(4096) == b"READY=1"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dock-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sdnotify.send_datagram("WATCHDOG=1", "@" + name)
        assert sock.recv(64) == b"WATCHDOG=1"


def test_no_notify_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False


def test_watchdog_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval_s() is None


def test_watchdog_pings_stop_when_a_check_fails(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    worker = sdnotify.Heartbeat()
    dog = sdnotify.Watchdog()
    dog.add_check("bay 1 worker", worker.fresh(0.3))
    dog.add_check("sync loop", lambda: True)
    dog.start()
    try:
        healthy = [m for m in received(notify_socket, 0.25) if m == "WATCHDOG=1"]
        assert len(healthy) >= 3
        stale = worker.fresh(0.3)
        wait_for(lambda: not stale(), 5, "the worker hangs: no beat for longer than 0.3 s")
        got = received(notify_socket, 0.2)  # drain the transition
        assert "STATUS=unhealthy: bay 1 worker" in got
        assert received(notify_socket, 0.4) == []  # no pings: systemd will restart us
        worker.beat()
        assert "WATCHDOG=1" in received(notify_socket, 0.3)
    finally:
        dog.stop()


@pytest.mark.logs_exception(reason="a check that raises is logged with its traceback")
def test_raising_check_counts_as_failing(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[str] = []
    dog = sdnotify.Watchdog(interval_s=1.0, notifier=lambda s: sent.append(s) or True)
    dog.add_check("boom", lambda: 1 / 0 > 0)
    dog.tick()
    assert sent == ["STATUS=unhealthy: boom"]
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert logged.exc_info and logged.exc_info[0] is ZeroDivisionError


def test_logs_show_fields_and_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from agent.logs import register_secret, setup_logging

    handler = setup_logging("INFO", journal=False)
    try:
        register_secret("hunter2-secret")
        log = logging.getLogger("agent.test")
        log.info("offloaded %s", "clip", extra={"BAY": 2, "DEVICE_ID": "ZFY1"})
        log.warning("password was %s", "hunter2-secret")
        err = capsys.readouterr().err
        assert "offloaded clip [BAY=2 DEVICE_ID=ZFY1]" in err
        assert "hunter2-secret" not in err and "password was ***" in err
    finally:
        logging.getLogger().removeHandler(handler)
