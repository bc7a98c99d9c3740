"""A dock under test: config in tmp_path, simulated bays, the daemon in-process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.config import DockConfig, parse_config
from agent.daemon.runtime import Daemon
from agent.daemon.wiring import assemble
from agent.dock.clock import ClockSource
from agent.events import Alert, BayView
from agent.sync.queue import DEFAULT_BACKOFF, Backoff
from agent.transfer.receiver.trustdir import load_receiver_key
from agent.trust.dock import load_signing_key
from agent.trust.keys import write_public
from firmware_interface.base import Recorder, Status

CLOSED_PORT = 1  # nothing listens: the dock works offline and never meets a stray broker


def central_pub(tmp: Path) -> Path:
    """Central's public key for docks under `tmp`: the pair is `tmp/receiver.key`, the key a
    Receiver whose store is directly under `tmp` uses by default, so their receipts verify."""
    load_receiver_key(tmp / "receiver.key", "dock-receiver")
    return tmp / "receiver.pub"


def enroll(cfg: DockConfig, keys_dir: Path) -> Path:
    """The dock's public key put in a receiver's dock_keys_dir (the pair made if missing)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = load_signing_key(cfg)
    path = keys_dir / f"{cfg.client_id}.pub"
    write_public(path, key.public_key(), cfg.client_id)
    return path


def dock_config(
    tmp: Path, bays: int = 1, mqtt: dict[str, Any] | None = None, **policy: Any
) -> DockConfig:
    """A dock with `bays` simulated bays under `tmp`, policy overrides applied.

    Central's key is enrolled (`central_pub`) unless `mqtt` sets central_key_file itself.
    """
    mqtt = dict(mqtt or {"port": CLOSED_PORT})
    mqtt.setdefault("central_key_file", str(central_pub(tmp)))
    data: dict[str, Any] = {
        "dock": {"id": "dock-test", "department": "水政监察大队", "data_dir": str(tmp / "data")},
        "bay": [{"number": n, "sim_dir": str(tmp / f"bay{n}")} for n in range(1, bays + 1)],
        "policy": {"require_synced_clock": False, "disk_reserve_bytes": 0, **policy},
        "mqtt": mqtt,
        "ui": {"listen": ""},  # tests run side by side: no daemon of theirs takes port 8080
    }
    return parse_config(data)


def config_toml(cfg: DockConfig) -> str:
    """The TOML text of a test config, for commands run as subprocesses."""
    lines = [f'[dock]\nid = "{cfg.dock.id}"\ndata_dir = "{cfg.dock.data_dir}"\n']
    for bay in cfg.bay:
        lines.append(f'[[bay]]\nnumber = {bay.number}\nsim_dir = "{bay.sim_dir}"\n')
    p = cfg.policy
    lines.append(
        f"[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
        f'delete_from_recorder = "{p.delete_from_recorder}"\n'
    )
    m = cfg.mqtt
    lines.append(
        f'[mqtt]\nhost = "{m.host}"\nport = {m.port}\nupstream = "{m.upstream}"\n'
        f'central_key_file = "{m.central_key_file}"\n'
    )
    for key in ("tls_ca", "tls_cert", "tls_key", "username", "password_file"):
        if getattr(m, key):
            lines.append(f'{key} = "{getattr(m, key)}"\n')
    lines.append(f'[ui]\nlisten = "{cfg.ui.listen}"\n')
    return "".join(lines)


class Views:
    """Collects every bay view and alert the daemon emits."""

    def __init__(self) -> None:
        self.items: list[BayView] = []
        self.alerts: list[Alert] = []

    def __call__(self, item: object) -> None:
        if isinstance(item, BayView):
            self.items.append(item)
        elif isinstance(item, Alert):
            self.alerts.append(item)

    def latest(self, bay: int) -> BayView | None:
        """The last view of `bay`."""
        return next((v for v in reversed(self.items) if v.number == bay), None)

    def states(self, bay: int) -> list[str]:
        """The sequence of distinct states `bay` went through."""
        out: list[str] = []
        for v in self.items:
            if v.number == bay and (not out or out[-1] != v.state):
                out.append(v.state)
        return out


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond` until truthy; fail the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def running(
    cfg: DockConfig,
    refresh_s: float = 0.3,
    clock: ClockSource | None = None,
    sync_backoff: Backoff = DEFAULT_BACKOFF,
) -> Iterator[tuple[Daemon, Views]]:
    """The daemon started with views recorded; stopped afterwards."""
    daemon = assemble(cfg, refresh_s=refresh_s, clock=clock, sync_backoff=sync_backoff)
    views = Views()
    daemon.services.bus.subscribe(views)
    daemon.start()
    try:
        yield daemon, views
    finally:
        daemon.stop()


def settled(daemon: Daemon, views: Views, bay: int) -> bool:
    """The bay finished offloading and analysis is idle."""
    v = views.latest(bay)
    analysis = daemon.parts.analysis if daemon.parts else None
    idle = analysis is None or analysis.idle()
    return bool(v and v.state in ("charging", "ready", "fault") and idle)


def count_status_reads(recorder: Recorder | None) -> list[int]:
    """Count the bay's status reads (each refresh reads the recorder once): [reads so far]."""
    assert recorder is not None
    reads = [0]
    status = recorder.status

    def counted() -> Status:
        reads[0] += 1
        return status()

    recorder.status = counted  # type: ignore[method-assign]
    return reads
