"""Talking to systemd: READY/STATUS/WATCHDOG/STOPPING, and a watchdog that pings only while healthy."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run by systemd or on failure."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        import systemd.daemon as daemon
    except ImportError:
        return send_datagram(state)
    return bool(daemon.notify(state))


def send_datagram(state: str, address: str | None = None) -> bool:
    """The sd_notify protocol by hand: one datagram to $NOTIFY_SOCKET (abstract when '@...')."""
    address = address or os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError as exc:
        logger.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    """Tell systemd start-up is complete (Type=notify), with an optional status line."""
    return notify("READY=1" + (f"\nSTATUS={one_line(status)}" if status else ""))


def status(text: str) -> bool:
    """Set the one-line status shown by `systemctl status`."""
    return notify(f"STATUS={one_line(text)}")


def stopping(status: str = "") -> bool:
    """Tell systemd we are shutting down."""
    return notify("STOPPING=1" + (f"\nSTATUS={one_line(status)}" if status else ""))


def one_line(text: str) -> str:
    """`text` on one line (sd_notify assignments are newline-separated)."""
    return " ".join(text.split())


def watchdog_interval_s() -> float | None:
    """Half of WATCHDOG_USEC in seconds when the watchdog is meant for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Heartbeat:
    """A worker's sign of life: it calls beat(); the watchdog checks fresh(max_age_s)."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        """Record that the worker is making progress."""
        self._last = time.monotonic()

    def age_s(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self._last

    def fresh(self, max_age_s: float) -> HealthCheck:
        """A health check: the last beat is younger than `max_age_s`."""
        return lambda: self.age_s() < max_age_s


class Watchdog:
    """Sends WATCHDOG=1 every interval while all health checks pass; a hung worker stops it."""

    def __init__(
        self, interval_s: float | None = None, notifier: Callable[[str], bool] = notify
    ) -> None:
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self._notify = notifier
        self._checks: dict[str, HealthCheck] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: list[str] = []

    def add_check(self, name: str, check: HealthCheck) -> None:
        """Require `check()` to be true for the watchdog to keep pinging."""
        self._checks[name] = check

    def failing(self) -> list[str]:
        """Names of the checks that fail now (a check that raises fails)."""
        bad = []
        for name, check in list(self._checks.items()):
            try:
                ok = check()
            except Exception:
                logger.exception("health check %s raised", name)
                ok = False
            if not ok:
                bad.append(name)
        return bad

    def start(self) -> None:
        """Start pinging (a no-op when systemd set no watchdog)."""
        if not self.interval_s:
            logger.info("no systemd watchdog for this process")
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        assert self.interval_s
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        """One round: ping when healthy, else say what is failing (once per change)."""
        failing = self.failing()
        if failing != self._failing:
            self._failing = failing
            if failing:
                logger.error("unhealthy, withholding watchdog pings: %s", ", ".join(failing))
                self._notify(f"STATUS=unhealthy: {', '.join(failing)}")
            else:
                logger.info("healthy again")
        if not failing:
            self._notify("WATCHDOG=1")
