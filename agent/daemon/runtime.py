"""The daemon: wires discovery, bay workers, the store, MQTT, sync and systemd together."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import DockConfig
from agent.daemon.reload import ReloadPlan, plan_reload, set_log_level
from agent.daemon.services import Parts, Services
from agent.dock.bay import BayWorker, ClipSynced
from agent.dock.clock import ClockSource
from agent.dock.hardware import build_watchers
from agent.dock.roster import Roster
from agent.durable import make_dirs, write_json
from agent.events import ActiveAlerts, Alert, BayView, ClipFlow, DockEvent, EventBus, Synced
from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex
from agent.evidence.store import EvidenceStore
from agent.timebase import recorder_zone
from firmware_interface.discovery import BayWatcher, DiscoveryEvent

logger = logging.getLogger(__name__)

STATE_WRITE_INTERVAL_S = 0.5


class LocalState:
    """Bay views, alerts and events kept in {data_dir}/state/ for `dock-agent status`."""

    def __init__(self, data_dir: Path, alerts: ActiveAlerts) -> None:
        self.path = data_dir / "state" / "bays.json"
        self.bays: dict[int, dict[str, Any]] = {}
        self.alerts = alerts
        self._dirty = threading.Event()
        self._lock = threading.Lock()

    def on_item(self, item: BayView | DockEvent | Alert) -> None:
        """Bus listener: remember the latest of everything."""
        with self._lock:
            if isinstance(item, BayView):
                self.bays[item.number] = item.to_json()
            elif not isinstance(item, Alert):
                return
        self._dirty.set()

    def mark_dirty(self) -> None:
        """Force the next flush to write."""
        self._dirty.set()

    def flush(self, extra: dict[str, Any]) -> None:
        """Write the state file when something changed."""
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        with self._lock:
            doc = {
                "bays": {str(k): v for k, v in sorted(self.bays.items())},
                "alerts": self.alerts.documents(),
                **extra,
            }
        write_json(self.path, doc)


class Daemon:
    """One dock: its bays, its store, its reporting."""

    def __init__(
        self,
        cfg: DockConfig,
        refresh_s: float = 5.0,
        clock: ClockSource | None = None,
        roster: Roster | None = None,
    ) -> None:
        """`roster`: the officer roster central serves, when configured (a plugin of its own)."""
        self.cfg = cfg
        self.started_at = datetime.now(UTC)
        data = cfg.data_dir
        make_dirs(data)
        store = EvidenceStore(data, cfg.policy.disk_reserve_bytes)
        store.clean_incoming()
        self.services = Services(
            cfg=cfg,
            tz=recorder_zone(cfg.policy.timezone),
            store=store,
            index=ClipIndex(data),
            custody=CustodyLog(data / "custody.jsonl"),
            bus=EventBus(),
            flow=ClipFlow(),
            clock=(clock or ClockSource(cfg.policy.clock_sync_source)).state,
            roster=roster,
        )
        self.bays = {b.number: BayWorker(b.number, self.services, refresh_s) for b in cfg.bay}
        self.services.flow.subscribe(Synced, self.clip_synced)
        self.alerts = ActiveAlerts()  # first listener: every later one sees the set updated
        self.services.bus.subscribe(self.alerts.on_item)
        self.state = LocalState(data, self.alerts)
        self.services.bus.subscribe(self.state.on_item)
        self.watchers: list[BayWatcher] = []
        self.stopping = threading.Event()
        self.plugins: list[Any] = []
        self.parts: Parts | None = None  # set by agent.daemon.wiring.assemble
        self.heartbeat = time.monotonic()
        self._keeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)

    def dispatch(self, ev: DiscoveryEvent) -> None:
        """Route a discovery event to its bay's worker."""
        worker = self.bays.get(ev.bay)
        if worker is None:
            logger.warning("event for unknown bay %s ignored", ev.bay)
            return
        logger.debug("bay %s: %s", ev.bay, type(ev).__name__)
        worker.post(ev)

    def clip_synced(self, step: Synced) -> None:
        """Flow handler: the bay holding the clip's recorder frees its copy (SPEC 9).

        A recorder in no bay now is freed when it docks again (its bay looks for clips whose
        recorder copy is still to be handled after every offload).
        """
        for worker in self.bays.values():
            if worker.view.device_id == step.device_id:
                worker.post(ClipSynced(step.clip_id))

    def start(self) -> None:
        """Start bays, plugins (MQTT, sync, analysis) and discovery."""
        for worker in self.bays.values():
            worker.start()
        for plugin in self.plugins:
            plugin.start()
        self.watchers = build_watchers(self.cfg, self.services.tz)
        for watcher in self.watchers:
            watcher.start(self.dispatch)
        self._keeper.start()
        logger.info("dock %s started with %d bays", self.cfg.dock.id, len(self.bays))

    def stop(self) -> None:
        """Stop discovery, bays and plugins; nothing half-written is left indexed."""
        self.stopping.set()
        if self._keeper.is_alive():
            self._keeper.join(10)
        for watcher in self.watchers:
            watcher.stop()
        for worker in self.bays.values():
            worker.stop()
        for plugin in reversed(self.plugins):
            plugin.stop()
        self.flush_state()
        self.services.index.close()

    def reload(self, new: DockConfig) -> ReloadPlan:
        """Run on `new` where it may change in flight (see agent.daemon.reload)."""
        plan = plan_reload(self.cfg, new)
        cfg, s = plan.effective, self.services
        if cfg.policy.clock_sync_source != self.cfg.policy.clock_sync_source:
            s.clock = ClockSource(cfg.policy.clock_sync_source).state
        s.store.reserve_bytes = cfg.policy.disk_reserve_bytes
        if self.parts is not None:
            self.parts.sync.sender.set_rate_limit(cfg.mqtt.rate_limit_bytes_per_s)
        self.cfg = s.cfg = cfg  # one assignment: every reader sees the old or the new whole
        set_log_level(cfg.dock.log_level)
        return plan

    def flush_state(self) -> None:
        """Persist the local state file for `dock-agent status`."""
        head = self.services.custody.head()
        self.state.flush(
            {
                "dock_id": self.cfg.dock.id,
                "version": __version__,
                "pid": _pid(),
                "started_at": self.started_at.isoformat(timespec="seconds"),
                "custody_head": {"seq": head[0], "hash": head[1]},
            }
        )

    def healthy(self, stall_s: float = 120.0) -> bool:
        """Every bay worker and the housekeeping loop alive and not stalled."""
        keeper = not self._keeper.is_alive() or time.monotonic() - self.heartbeat < stall_s
        return keeper and all(w.healthy(stall_s) for w in self.bays.values())

    def run_forever(self) -> None:
        """Block until stop is requested (a signal handler sets `stopping`)."""
        self.stopping.wait()

    def _housekeeping(self, tick_s: float = 0.5) -> None:
        """Persist the state file and let plugins do periodic work, until stopping."""
        self.state.mark_dirty()
        while not self.stopping.wait(tick_s):
            self.heartbeat = time.monotonic()
            try:
                self.flush_state()
                for plugin in self.plugins:
                    tick = getattr(plugin, "tick", None)
                    if tick:
                        tick()
            except Exception:
                logger.exception("housekeeping failed; continuing")


def _pid() -> int:
    return os.getpid()
