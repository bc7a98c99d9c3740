"""Is the dock's clock synchronised? Asked of the time service, which works inside the unit.

The kernel's own answer (adjtimex) is out of reach: the unit's ProtectClock=yes blocks the
@clock system calls altogether, reads included (systemd.exec(5)), and STA_UNSYNC is unreliable
anyway (chrony without rtcsync leaves it set while synchronised). So the answer comes from:

- systemd-timesyncd: /run/systemd/timesync/synchronized is "touched on each successful
  synchronization" (systemd-timesyncd.service(8)); /run is emptied at boot, so the file
  exists once the clock was synchronised since boot;
- chrony: `chronyc -c tracking`, CSV fields (chrony client.c, process_cmd_tracking):
  reference ID (hex), reference name, stratum, ref time, system time, last offset, RMS
  offset, frequency, residual frequency, skew, root delay, root dispersion, update interval,
  leap status (Normal, Insert second, Delete second, Not synchronised). chronyc falls back
  to 127.0.0.1:323 when it cannot use chronyd's socket, where `tracking` is allowed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCES = ("auto", "timesyncd", "chrony", "none")
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
CHRONYC_TIMEOUT_S = 5.0
CACHE_S = 10.0
LEAP_SYNCED = ("Normal", "Insert second", "Delete second")
CHRONY_LOCAL_REF = "7F7F0101"  # chrony's `local` mode: no external source at all


@dataclass(frozen=True)
class ClockState:
    """The answer (True, False, or None when it cannot be told), its source, and why."""

    synced: bool | None
    source: str
    reason: str


def parse_tracking(csv_line: str) -> ClockState:
    """The answer in one line of `chronyc -c tracking` output."""
    fields = csv_line.strip().split(",")
    if len(fields) < 14:
        return ClockState(None, "chrony", f"chronyc tracking: unexpected output {csv_line!r:.80}")
    ref_id, ref_name, stratum, leap = fields[0], fields[1], fields[2], fields[13]
    if leap not in LEAP_SYNCED:
        return ClockState(False, "chrony", f"chrony: leap status {leap!r}")
    if ref_id.upper() in ("00000000", CHRONY_LOCAL_REF):
        return ClockState(False, "chrony", f"chrony: no external reference (reference {ref_id})")
    where = ref_name or ref_id
    return ClockState(True, "chrony", f"chrony: synchronised to {where} (stratum {stratum})")


def timesyncd_state(flag: Path) -> ClockState:
    """systemd-timesyncd's answer: its flag file exists once it synchronised since boot."""
    try:
        flag.stat()
    except FileNotFoundError:
        return ClockState(False, "timesyncd", f"timesyncd: {flag} is absent (not synchronised)")
    except OSError as exc:
        return ClockState(None, "timesyncd", f"timesyncd: {flag}: {exc.strerror}")
    return ClockState(True, "timesyncd", f"timesyncd: {flag} present")


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=CHRONYC_TIMEOUT_S, check=False
    )


def chrony_state(chronyc: str, run: Runner = _run) -> ClockState:
    """chrony's answer, from `chronyc -c tracking`."""
    try:
        done = run([chronyc, "-c", "-n", "tracking"])
    except FileNotFoundError:
        return ClockState(None, "chrony", f"chrony: {chronyc} is not installed")
    except subprocess.TimeoutExpired:
        return ClockState(
            None, "chrony", f"chrony: chronyc gave no answer in {CHRONYC_TIMEOUT_S:g} s"
        )
    except OSError as exc:
        return ClockState(None, "chrony", f"chrony: cannot run {chronyc}: {exc.strerror}")
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        why = said[-1] if said else f"exit {done.returncode}"
        return ClockState(None, "chrony", f"chrony: chronyc tracking failed: {why}")
    return parse_tracking(done.stdout.splitlines()[0] if done.stdout else "")


class ClockSource:
    """The configured way to know whether the dock's clock is synchronised (cached briefly)."""

    def __init__(
        self,
        source: str = "auto",
        *,
        flag: Path = TIMESYNCD_FLAG,
        chronyc: str = "chronyc",
        cache_s: float = CACHE_S,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"clock_sync_source {source!r}: expected one of {', '.join(SOURCES)}")
        self.source = source
        self.flag = flag
        self.chronyc = chronyc
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, ClockState] | None = None

    def state(self) -> ClockState:
        """The current answer (asked again at most every `cache_s`)."""
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_s:
                return self._cached[1]
            answer = self._ask()
            if self._cached is None or self._cached[1] != answer:
                logger.info("dock clock: synced=%s (%s)", answer.synced, answer.reason)
            self._cached = (now, answer)
            return answer

    def synced(self) -> bool | None:
        """The answer alone."""
        return self.state().synced

    def _ask(self) -> ClockState:
        if self.source == "timesyncd":
            return timesyncd_state(self.flag)
        if self.source == "chrony":
            return chrony_state(self.chronyc)
        if self.source == "none":
            return ClockState(None, "none", "clock_sync_source = none: no time service is asked")
        return self._auto()

    def _auto(self) -> ClockState:
        """timesyncd if its flag says synced, else chrony if installed, else timesyncd's no."""
        answer = timesyncd_state(self.flag)
        if answer.synced:
            return answer
        if shutil.which(self.chronyc):
            return chrony_state(self.chronyc)
        if self.flag.parent.is_dir():  # timesyncd runs but has not synchronised yet
            return answer
        return ClockState(
            None, "none", f"no time service found ({self.flag.parent} absent, no chronyc)"
        )
