"""The simulated recorder: a directory laid out like a recorder volume (SPEC 5)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from firmware_interface.base import (
    Capabilities,
    ClipEntry,
    EventLog,
    Identity,
    Listing,
    RecorderGone,
    Status,
)
from firmware_interface.discovery import DiscoveryEvent, Docked, Undocked
from firmware_interface.event_log import read_event_log
from firmware_interface.findings import Finding
from firmware_interface.volume import (
    EVENT_LOG,
    Volume,
    identity_from,
    number_or_none,
    read_recorder_json,
    status_from,
)

logger = logging.getLogger(__name__)


class SimulatedRecorder:
    """A recorder backed by a directory; charges while docked, clock = host + offset."""

    capabilities = Capabilities(read_clock=True, set_clock=True, delete=True, event_log=True)

    def __init__(self, root: Path, tz: ZoneInfo) -> None:
        self.volume = Volume(root)
        self.tz = tz
        self.docked_at = time.monotonic()
        self._findings: list[Finding] = []

    def _data(self) -> dict[str, object]:
        if not self.volume.root.is_dir():
            raise RecorderGone("simulated recorder directory is gone")
        data, self._findings = read_recorder_json(self.volume)
        return data

    def identity(self) -> Identity:
        """Identity from recorder.json."""
        return identity_from(self._data())

    def identity_findings(self) -> list[Finding]:
        """Findings from the last read of recorder.json."""
        return list(self._findings)

    def status(self) -> Status:
        """Battery (charging since docking), storage and clock."""
        data = self._data()
        offset = number_or_none(data, "clock_offset_s") or 0.0
        clock: datetime | None
        try:
            clock = datetime.now(self.tz).replace(tzinfo=None) + timedelta(seconds=offset)
        except OverflowError:  # an offset of millennia: no clock reading at all
            clock = None
        used = sum(c.size for c in self.volume.list_media().clips)
        status = status_from(data, clock, used)
        battery = status.battery_pct
        rate = number_or_none(data, "charge_pct_per_min") or 0.0
        if battery is not None and 0 <= battery <= 100:
            minutes = (time.monotonic() - self.docked_at) / 60
            battery = min(100.0, battery + rate * minutes)
        return Status(
            battery,
            battery is not None and battery < 100,
            status.storage_total_bytes,
            status.storage_free_bytes,
            clock,
            status.faults,
        )

    def set_clock(self, now: datetime) -> None:
        """Zero the clock offset and log a clock_set event, as a recorder would."""
        data = self._data()
        data["clock_offset_s"] = 0.0
        write_json(self.volume.root / "recorder.json", data)
        log = self.volume.root / EVENT_LOG
        log.parent.mkdir(exist_ok=True)
        line = {"ts": now.replace(microsecond=0).isoformat(), "event": "clock_set"}
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def list_clips(self) -> Listing:
        """Every media file under DCIM/."""
        return self.volume.list_media()

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        """Open a clip read-only, refusing links and escapes."""
        return self.volume.open_file(clip.path)

    def delete_clip(self, clip: ClipEntry) -> None:
        """Delete a clip from the simulated recorder."""
        self.volume.unlink(clip.path)

    def read_events(self) -> EventLog:
        """LOG/events.jsonl."""
        return read_event_log(self.volume)

    def close(self) -> None:
        """Nothing to release for a directory."""


# How often a simulated bay is looked at. udev tells the daemon of a real recorder within
# milliseconds; at 0.2 s a simulated docking waited 0.1 s on average (up to 0.2 s) before the
# daemon saw it, the same order as the offload of a small recorder. One stat() of recorder.json
# per bay each time.
SIM_POLL_S = 0.02


class SimBayWatcher:
    """Discovery for simulated bays: docked while sim_dir holds recorder.json."""

    def __init__(self, bays: dict[int, Path], tz: ZoneInfo, interval_s: float = SIM_POLL_S) -> None:
        self.bays = bays
        self.tz = tz
        self.interval_s = interval_s
        self._present: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        """Poll the bays' directories in a thread, emitting Docked/Undocked."""
        self._thread = threading.Thread(
            target=self._run, args=(emit,), name="sim-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        while not self._stop.is_set():
            self.poll(emit)
            self._stop.wait(self.interval_s)

    def poll(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        """One look at every simulated bay."""
        for number, root in self.bays.items():
            present = (root / "recorder.json").is_file()
            if present and number not in self._present:
                self._present.add(number)
                emit(Docked(number, SimulatedRecorder(root, self.tz), "simulated"))
            elif not present and number in self._present:
                self._present.discard(number)
                emit(Undocked(number))


def write_json(path: Path, obj: Any) -> None:
    """Replace a volume file whole (temp file and rename), as the watcher may read it any time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
