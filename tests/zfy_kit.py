"""The fake GA/T 947 SDK (tests/fake_zfy/fake_zfy.c) as pytest fixtures.

fake_sdk (the vendor signatures), fake_sdk_no_resolution (built without ReadDeviceResolution),
control (its control file and call log).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_interface import zfy

SOURCE = Path(__file__).parent / "fake_zfy" / "fake_zfy.c"
PASSWORD = "123456"
ID_CODE = "HACH8"  # the device type's identification code the fake recorder answers to
TZ = ZoneInfo("Asia/Shanghai")


def build(tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str) -> str:
    """The fake SDK, compiled with the system compiler (warnings are errors)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build the fake SDK")
    lib = tmp_path_factory.mktemp("zfy") / name
    cmd = [cc, "-shared", "-fPIC", "-Wall", "-Werror", *flags, "-o", str(lib), str(SOURCE)]
    subprocess.run(cmd, check=True)
    return str(lib)


@pytest.fixture(scope="session")
def fake_sdk(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fake SDK with every function of the Ministry's set."""
    return build(tmp_path_factory, "libfakezfy.so")


@pytest.fixture(scope="session")
def fake_sdk_no_resolution(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fake SDK of a vendor that ships no ReadDeviceResolution."""
    return build(tmp_path_factory, "libfakezfy-nores.so", "-DNO_RESOLUTION")


class Control:
    """The fake SDK's control file and call log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        self.values: dict[str, bytes] = {}
        self.store = path.with_suffix(".info")
        self.set(
            id_code=ID_CODE,
            password=PASSWORD,
            serial="ZFY12345",  # fills cSerial[8]: no terminating NUL
            user_no="012345",
            user_name="张三".encode("gbk"),
            unit_no="320100000000",
            unit_name="水政监察大队".encode("gbk"),
            battery="87",
            resolution="1920x1080",
            store=str(self.store),
            log=str(self.log),
        )

    def set(self, **values: str | bytes) -> None:
        """Change the fake's behaviour (read again on every SDK call)."""
        for key, value in values.items():
            self.values[key] = value if isinstance(value, bytes) else value.encode("gbk")
        self.path.write_bytes(
            b"".join(k.encode() + b"=" + v + b"\n" for k, v in self.values.items())
        )

    def calls(self) -> list[str]:
        """SDK calls so far, "<Function> <iRet> <string argument> [detail]"."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Control]:
    """The fake's control file, with the process in the recorders' zone (TZ).

    SyncDevTime sets the recorder to the dock's local time, so a dock is installed with its
    time zone set to the recorders' (docs/INSTALL.md); the fake SDK reads it in-process.
    """
    ctl = Control(tmp_path / "fake_zfy.ctl")
    monkeypatch.setenv("FAKE_ZFY_CONTROL", str(ctl.path))
    with local_zone(TZ.key):
        yield ctl
    for recorder in list(zfy.RECORDERS):  # one test's recorder in SDK mode must not outlive it
        recorder.close()


@contextmanager
def local_zone(name: str) -> Iterator[None]:
    """The process's local time zone (C library, as the SDK sees it) set to `name`."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
