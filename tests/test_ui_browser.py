"""The status page in a real headless Chromium during a docking: Chinese words, 800x480 screenshots.

Chromium and a CJK font come from `scripts/setup.sh --dev` (Debian's chromium and
fonts-wqy-microhei). Without a CJK font every Chinese character renders as an empty box, so
a missing font fails the test instead of skipping it.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from agent.config import DockConfig, parse_config
from agent.trust.dock import dock_fingerprint
from agent.ui.server import PageServer
from firmware_interface import simkit
from firmware_interface.base import ClipEntry
from firmware_interface.discovery import Docked
from firmware_interface.simulated import SimulatedRecorder
from tests.dock import config_toml, dock_config, running, wait_for

SETUP = "run scripts/setup.sh --dev (Debian packages chromium and fonts-wqy-microhei)"


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, f"chromium is not installed: {SETUP}"
    return found


def test_a_chinese_font_is_installed() -> None:
    fc_list = shutil.which("fc-list")
    assert fc_list, f"fontconfig is not installed: {SETUP}"
    fonts = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=True)
    assert fonts.stdout.strip(), f"no font covers Chinese (fc-list :lang=zh is empty): {SETUP}"


def chromium(tmp: Path, url: str, *action: str) -> str:
    """Run headless Chromium once at 800x480 on a new profile; its stdout."""
    profile = Path(os.path.join(tmp, f"profile-{time.monotonic_ns()}"))
    profile.mkdir()
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # root cannot use its sandbox
    flags = [
        "--headless",
        *sandbox,
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=800,480",
        "--hide-scrollbars",
        "--virtual-time-budget=2500",  # the page's first polls of /api/status, then the result
    ]
    done = subprocess.run(
        [chromium_binary(), *flags, *action, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def bay_text(dom: str, bay: int) -> str:
    """The visible words of one bay's card in a dumped DOM."""
    card = re.search(rf'<section class="[^"]*" id="bay-{bay}".*?</section>', dom, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", card.group(0))) if card else ""


def shows(tmp: Path, url: str, words: dict[int, str]) -> list[str]:
    """Load the page until each bay shows its words; the cards' texts."""
    seen: list[str] = []

    def look() -> bool:
        nonlocal seen
        dom = chromium(tmp, url, "--dump-dom")
        seen = [bay_text(dom, bay) for bay in words]
        return all(w in text for w, text in zip(words.values(), seen, strict=True))

    try:
        wait_for(look, 60, f"the page to show {words}")
    except AssertionError:
        raise AssertionError(f"the page shows {seen}, not {words}") from None
    return seen


def screenshot(tmp: Path, url: str, name: str) -> Path:
    path = tmp / name
    chromium(tmp, url, f"--screenshot={path}")
    assert path.stat().st_size > 10_000, f"{name} looks empty"
    return path


class Gate:
    """Holds the third clip read from a recorder until opened (a slow USB link).

    The third by reading, not by name: a directory lists its files in no fixed order.
    """

    def __init__(self, held: int = 3) -> None:
        self.open = threading.Event()
        self.reached = threading.Event()
        self._held = held
        self._started = 0
        self._lock = threading.Lock()

    def first_read(self) -> None:
        """A clip's first read: the held one waits until the gate opens."""
        with self._lock:
            self._started += 1
            held = self._started == self._held
        if held:
            self.reached.set()
            self.open.wait(60)


class GatedRecorder(SimulatedRecorder):
    """The simulated driver whose files are read through the gate."""

    def __init__(self, root: Path, tz: ZoneInfo, gate: Gate) -> None:
        super().__init__(root, tz)
        self.gate = gate

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        return GatedFile(super().open_clip(clip), self.gate)  # type: ignore[return-value]


class GatedFile:
    """A recorder file whose bytes come once the gate opens; everything else as the real file."""

    def __init__(self, fh: BinaryIO, gate: Gate) -> None:
        self._fh, self._gate, self._reading = fh, gate, False

    def _wait(self) -> None:
        if not self._reading:
            self._reading = True
            self._gate.first_read()

    def read(self, n: int = -1) -> bytes:
        self._wait()
        return self._fh.read(n)

    def readinto(self, buf: bytearray) -> int:
        self._wait()
        return self._fh.readinto(buf)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)

    def __enter__(self) -> GatedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def page_dock(tmp: Path) -> DockConfig:
    cfg = dock_config(tmp, bays=3, delete_from_recorder="never")
    text = config_toml(cfg).replace('listen = ""', 'listen = "127.0.0.1:0"')
    (tmp / "dock.toml").write_text(text)
    import tomllib

    return parse_config(tomllib.loads(text))


def test_the_page_in_chromium_through_a_docking(tmp_path: Path) -> None:
    test_a_chinese_font_is_installed()
    cfg = page_dock(tmp_path)
    now = datetime.now()
    officer = simkit.SimRecorder(
        "ZFY0012345",
        "012345",
        battery_pct=97,
        clips=[
            # a long recording first: over 8 MiB, copied alone with its progress shown
            simkit.SimClip(now - timedelta(hours=2), 100, "WAV"),
            *simkit.shift(now - timedelta(hours=1), [2, 2]),
        ],
    )
    broken = simkit.SimRecorder(
        "ZFY0067890", "067890", battery_pct=250, clips=[simkit.SimClip(now, 1)]
    )
    done = simkit.SimRecorder(
        "ZFY0011111", "011111", battery_pct=100, clips=[simkit.SimClip(now, 1)]
    )
    simkit.build(tmp_path / "gated", officer)
    simkit.build(tmp_path / "bay2", broken)
    simkit.build(tmp_path / "bay3", done)
    gate = Gate()
    recorder = GatedRecorder(tmp_path / "gated", ZoneInfo("UTC"), gate)
    with running(cfg) as (daemon, _views):
        url = next(p.url for p in daemon.plugins if isinstance(p, PageServer))
        assert url
        daemon.dispatch(Docked(1, recorder, "simulated"))
        assert gate.reached.wait(60), "the offload never reached the third clip"
        busy, faulted, ready3 = shows(
            tmp_path, url, {1: "正在导出", 2: "故障：电池电量读数异常", 3: "就绪"}
        )
        offloading = screenshot(tmp_path, url, "offloading.png")
        fault = screenshot(tmp_path, url, "fault.png")
        gate.open.set()
        (ready_words,) = shows(tmp_path, url, {1: "就绪"})
        ready = screenshot(tmp_path, url, "ready.png")
        footer = html.unescape(chromium(tmp_path, url, "--dump-dom"))
    fingerprint = dock_fingerprint(cfg)
    assert fingerprint and f"本机密钥指纹 {fingerprint}" in footer, "the dock's key, to compare"
    # two clips were read before the stall (which ones depends on the listing order): the
    # page shows their bytes, also the last update the bay's emit throttle held back
    assert re.search(r"正在导出 [1-9]\d*%", busy) and re.search(r"[0-2]/3 个文件", busy), busy
    assert "警员 012345" in busy and "设备 ZFY0012345" in busy
    assert "设备 ZFY0067890" in faulted and "设备 ZFY0011111" in ready3
    assert "正在导出" not in ready_words
    assert offloading.read_bytes() != ready.read_bytes() and fault.exists()
    if os.environ.get("DOCK_AGENT_SCREENSHOTS"):  # refresh docs/status-page.png by hand
        shutil.copy(offloading, os.environ["DOCK_AGENT_SCREENSHOTS"])
