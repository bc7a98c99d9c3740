"""Prometheus metrics of one dock (SPEC 12), served as GET /metrics by the status page's server.

Each daemon has its own CollectorRegistry (several daemons in one test process do not collide).
Counters of what the dock did are read from its custody log, followed from where the last scrape
stopped: they are the log's own figures and true after a restart. Gauges are read from the
index, the store and the bay views at each scrape. Failures and offload durations happen in
the process and are counted from the event bus (they start at 0 again after a restart, which
Prometheus's rate() and increase() expect of a counter).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.events import BAY_STATES, Alert, BayView, DockEvent

logger = logging.getLogger(__name__)
disable_created_metrics()  # no *_created series beside each counter: noise for a dashboard

NS = "dock_agent"
OFFLOAD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
OFFLOAD_ALERTS = frozenset({"disk_full", "verify_failed"})  # an offload stopped (SPEC 9)


@dataclass
class CustodyTally:
    """What the custody log says the dock did, kept up to date by reading only new lines."""

    path: Path
    offset: int = 0
    entries: int = 0
    offloaded: int = 0
    offloaded_bytes: int = 0
    synced: int = 0
    synced_bytes: int = 0
    last_clock_offset_s: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    def update(self) -> None:
        """Read the lines appended since the last call (from the start if the file shrank)."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                if size < self.offset:  # a new log (a restored dock): count it afresh
                    self.__dict__.update(CustodyTally(self.path).__dict__)
                fh.seek(self.offset)
                data = fh.read(size - self.offset)
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for next time
        self.offset += len(complete)
        for raw in complete.splitlines():
            self.add(_entry(raw))

    def add(self, entry: dict[str, Any] | None) -> None:
        """Count one entry (pure bookkeeping)."""
        if entry is None:
            return
        self.entries += 1
        event, sha = entry.get("event"), str(entry.get("sha256"))
        raw_size = entry.get("size")
        size = raw_size if isinstance(raw_size, int) else 0
        if event == "clip_offloaded":
            self.offloaded += 1
            self.offloaded_bytes += size
            self.sizes[sha] = size
        elif event == "clip_synced":
            self.synced += 1
            self.synced_bytes += self.sizes.get(sha, 0)
        elif event == "clock_checked" and isinstance(entry.get("offset_s"), int | float):
            self.last_clock_offset_s = float(entry["offset_s"])


def _entry(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def failure_of(item: BayView | DockEvent | Alert) -> tuple[str, str] | None:
    """("offload" | "sync", reason) when `item` reports a failure, else None (pure).

    A bay's `fault` event, or a disk_full/verify_failed alert, is an offload that failed; a
    sync_failed alert, or a receipt_invalid alert of severity error (a receipt that did not
    verify; a forged answer beside a good receipt is a warning), is a sync that failed.
    """
    if isinstance(item, DockEvent) and item.type == "fault":
        return "offload", str(item.fields.get("code") or "unknown")
    if not isinstance(item, Alert) or item.severity == "clear" or item.fields.get("cleared"):
        return None
    if item.code in OFFLOAD_ALERTS:
        return "offload", item.code
    if item.code == "sync_failed" or (item.code == "receipt_invalid" and item.severity == "error"):
        return "sync", item.code
    return None


@dataclass
class Sources:
    """Where the gauges come from: the daemon's own state, read at each scrape."""

    stats: Callable[[], dict[str, Any]]
    free_bytes: Callable[[], int]
    custody_head: Callable[[], tuple[int, str]]
    bays: Callable[[], dict[int, BayView]]
    alerts: Callable[[], list[str]]
    clock_synced: Callable[[], bool]
    custody_path: Path
    dock_id: str


class DockCollector(Collector):
    """Counters from the custody log and gauges from the dock's state, at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources
        self.tally = CustodyTally(sources.custody_path)
        self._lock = threading.Lock()
        self._alerts_seen: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.tally.update()
            yield from self._counters()
            yield from self._queue()
            yield from self._bays()
            yield from self._alerts()
            yield from self._dock()

    def _counters(self) -> Iterator[Metric]:
        t = self.tally
        seq, _ = self.s.custody_head()
        yield _counter("clips_offloaded", "Clips offloaded and verified (custody log)", t.offloaded)
        yield _counter(
            "offloaded_bytes", "Bytes of clips offloaded (custody log)", t.offloaded_bytes
        )
        yield _counter("clips_synced", "Clips acked by central (custody log)", t.synced)
        yield _counter(
            "synced_bytes", "Bytes of clips acked by central (custody log)", t.synced_bytes
        )
        yield _counter("custody_entries", "Entries in the custody log (its head seq)", seq)

    def _queue(self) -> Iterator[Metric]:
        stats = self.s.stats()
        yield _gauge("queue_clips", "Clips waiting for central's ack", stats["unsynced_clips"])
        yield _gauge("queue_bytes", "Bytes waiting for central's ack", stats["unsynced_bytes"])
        oldest = stats.get("oldest_unsynced_offloaded_at")
        age = time.time() - _epoch(oldest) if oldest else 0.0
        yield _gauge("oldest_unsynced_age_seconds", "Age of the oldest unsynced clip", max(age, 0))
        yield _gauge("disk_free_bytes", "Free bytes of the evidence store", self.s.free_bytes())

    def _bays(self) -> Iterator[Metric]:
        views = self.s.bays()
        state = GaugeMetricFamily(
            f"{NS}_bay_state", "1 for the state each bay is in", labels=["bay", "state"]
        )
        battery = GaugeMetricFamily(
            f"{NS}_bay_battery_percent", "Battery of the recorder in the bay", labels=["bay"]
        )
        for n, view in sorted(views.items()):
            for name in BAY_STATES:
                state.add_metric([str(n), name], 1.0 if view.state == name else 0.0)
            if view.battery_pct is not None:
                battery.add_metric([str(n)], float(view.battery_pct))
        yield state
        yield battery

    def _alerts(self) -> Iterator[Metric]:
        active = set(self.s.alerts())
        self._alerts_seen |= active
        family = GaugeMetricFamily(
            f"{NS}_alert_active", "1 while the dock's alert is active", labels=["code"]
        )
        for code in sorted(self._alerts_seen):
            family.add_metric([code], 1.0 if code in active else 0.0)
        yield family
        yield _gauge("alerts_active", "Number of active alerts", len(active))

    def _dock(self) -> Iterator[Metric]:
        offset = self.tally.last_clock_offset_s
        yield _gauge(
            "last_docking_clock_offset_seconds",
            "Recorder clock minus dock clock, measured at the last docking",
            offset if offset is not None else float("nan"),
        )
        yield _gauge(
            "clock_synced", "1 when the dock's own clock is synchronised", self.s.clock_synced()
        )
        info = GaugeMetricFamily(
            f"{NS}_info", "The dock and its version", labels=["dock", "version"]
        )
        info.add_metric([self.s.dock_id, __version__], 1.0)
        yield info


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NS}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, value=float(value))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class BusMetrics:
    """EventBus listener: failures by reason and how long each docking's offload took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = {
            kind: Counter(
                f"{NS}_{kind}_failures", f"{kind.capitalize()}s that failed, by reason",
                ["reason"], registry=registry,
            )
            for kind in ("offload", "sync")
        }  # fmt: skip
        self.failures["offload"].labels("disk_full")  # present at 0 from the start
        self.failures["sync"].labels("sync_failed")
        self.offload_seconds = Histogram(
            f"{NS}_offload_duration_seconds", "Seconds from a docking's first copy to its end",
            buckets=OFFLOAD_BUCKETS, registry=registry,
        )  # fmt: skip
        self._started: dict[int, float] = {}

    def __call__(self, item: BayView | DockEvent | Alert) -> None:
        failure = failure_of(item)
        if failure is not None:
            kind, reason = failure
            self.failures[kind].labels(reason).inc()
        if isinstance(item, BayView):
            if item.state == "offloading":
                self._started.setdefault(item.number, time.monotonic())
            elif item.state in ("empty", "fault"):
                self._started.pop(item.number, None)
        elif isinstance(item, DockEvent) and item.type == "offload_complete":
            started = self._started.pop(int(item.fields.get("bay", 0)), None)
            if started is not None:
                self.offload_seconds.observe(time.monotonic() - started)


class DockMetrics:
    """The registry of one daemon: the collector and the bus listener."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DockCollector(sources))
        self.bus = BusMetrics(self.registry)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
