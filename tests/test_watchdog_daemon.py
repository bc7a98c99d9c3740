"""systemd watchdog on the real daemon: READY, pings while healthy, none once a bay hangs."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.daemon.reporting import Reporting
from agent.daemon.wiring import assemble
from firmware_interface import simkit
from firmware_interface.base import Identity
from firmware_interface.discovery import Docked
from firmware_interface.simulated import SimulatedRecorder
from tests.dock import dock_config, wait_for
from tests.test_sdnotify import received


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    folder = tempfile.mkdtemp(prefix="wd")  # AF_UNIX paths are short
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # systemd would ping-check every 0.4 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()
    shutil.rmtree(folder)


class HangingRecorder(SimulatedRecorder):
    """A recorder whose firmware stops answering when asked who it is."""

    release = threading.Event()

    def identity(self) -> Identity:
        self.release.wait(60)
        return super().identity()


def test_watchdog_stops_when_a_bay_worker_hangs(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    cfg = dock_config(tmp_path)
    daemon = assemble(cfg, refresh_s=0.2)
    reporting = next(p for p in daemon.plugins if isinstance(p, Reporting))
    reporting.stall_s = 1.0
    daemon.start()
    try:
        first = received(notify_socket, 1.0)
        assert any(d.startswith("READY=1") for d in first), first
        assert "WATCHDOG=1" in first, "pings while healthy"
        root = tmp_path / "hang"
        simkit.build(root, simkit.SimRecorder())
        daemon.dispatch(Docked(1, HangingRecorder(root, ZoneInfo("UTC")), "simulated"))
        wait_for(lambda: not daemon.healthy(1.0), 5, "bay worker seen as hung")
        received(notify_socket, 0.5)  # a ping may be in flight
        assert "WATCHDOG=1" not in received(notify_socket, 1.5), "no pings while a bay hangs"
        HangingRecorder.release.set()
        wait_for(lambda: daemon.healthy(1.0), 10, "bay worker recovered")
        assert "WATCHDOG=1" in received(notify_socket, 1.5), "pings resume"
    finally:
        HangingRecorder.release.set()
        daemon.stop()
