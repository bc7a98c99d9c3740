"""Fixtures of the power-cut tests: every server, zygote and mount is gone when a test ends."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.powercut.layer import PowerCutFS
from tests.powercut.zygote import Zygote

MakeLayer = Callable[..., PowerCutFS]


def alive(pid: int) -> bool:
    """The process exists and is no zombie (an orphan's zombie waits for pid 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    """A forking server for dock-agent processes; it and all it started are killed at the end."""
    z = Zygote()
    try:
        yield z
    finally:
        z.close()
    left = [pid for pid in [z.pid, *z.started] if alive(pid)]
    assert not left, f"processes left running after the test: {left}"


@pytest.fixture
def layers() -> Iterator[MakeLayer]:
    """Makes power-cut layers; each is unmounted (or its server killed) when the test ends."""
    made: list[PowerCutFS] = []

    def make(backing: Path, mountpoint: Path, journal: bool = False) -> PowerCutFS:
        fs = PowerCutFS(backing, mountpoint, journal=journal)
        made.append(fs)
        return fs

    try:
        yield make
    finally:
        for fs in made:
            fs.close()
    left = [str(fs.mountpoint) for fs in made if os.path.ismount(fs.mountpoint)]
    left += [f"server {fs.server_pid}" for fs in made if fs.server_pid and alive(fs.server_pid)]
    assert not left, f"left behind after the test: {left}"
