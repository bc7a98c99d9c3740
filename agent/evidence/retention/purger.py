"""The purger (daemon plugin): removes local copies that are acked and due, custody first.

Retention is counted in days, so a pass runs on a timer (`purge_interval_s`); what it looks
at comes from the clip's steps, not from a scan of the index each time: active clips become
candidates when their `Synced` step comes (or at the first pass's scan of the active set,
which also archives clips an older agent left finished), their class is decided again when
their `Analysed` step adds flags, and archived copies are followed from the archive shards.
A reload (a new configuration) has the next pass look at the whole active set once again.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.durable import fsync_dir
from agent.events import Purged, Synced
from agent.evidence import lifecycle
from agent.evidence.lifecycle import acked, archive_if_finished, has_local_copy, purgeable
from agent.evidence.retention.classes import keep_days, reclassified
from agent.evidence.retention.copies import LocalCopies
from agent.evidence.retention.rules import select_purges
from agent.timebase import iso, utcnow

if TYPE_CHECKING:
    from agent.config import DockConfig
    from agent.events import ClipFlow
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ArchiveFollower, ClipIndex
    from agent.evidence.store import EvidenceStore

logger = logging.getLogger(__name__)

MAX_PURGES_PER_PASS = 200
Record = dict[str, Any]


def _unlink(path: str | None) -> bool:
    """Remove a file and make the removal durable; False when it was already gone."""
    if not path:
        return False
    target = Path(path)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(target.parent)
    return True


class PurgerParts(Protocol):
    """The shared, thread-safe parts the purger uses (the daemon's `Services` is one)."""

    @property
    def cfg(self) -> DockConfig:
        """The configuration in force (replaced whole on reload)."""
        ...

    @property
    def store(self) -> EvidenceStore:
        """The evidence store."""
        ...

    @property
    def index(self) -> ClipIndex:
        """The clip index."""
        ...

    @property
    def custody(self) -> CustodyLog:
        """The custody log."""
        ...

    @property
    def flow(self) -> ClipFlow:
        """A clip's steps."""
        ...


class Purger:
    """Daemon plugin: purges local copies that are acked and due (or under disk pressure)."""

    def __init__(
        self,
        services: PurgerParts,
        clock: Callable[[], datetime] = utcnow,
        follower: ArchiveFollower | None = None,
    ) -> None:
        """Purge within `services`' store; `clock` is the trusted time; `follower` reads the
        archive for the local copies (default: the index's own)."""
        self.s = services
        self.clock = clock
        self.copies = LocalCopies(services.index, follower)
        self._last = -math.inf
        self._stop = threading.Event()
        self._scan = threading.Thread(target=self._load, name="purger-scan", daemon=True)
        self._acked: set[str] = set()  # active clips acked with a local copy
        self._acked_lock = threading.Lock()
        self._scanned_cfg: object = None  # the configuration of the last whole-set scan
        services.flow.subscribe(Synced, self.synced)

    @property
    def interval_s(self) -> float:
        """Seconds between passes, as configured now (a reload changes it in flight)."""
        return self.s.cfg.retention.purge_interval_s

    def start(self) -> None:
        """Scan the archive in the background: start-up does not wait for it."""
        self._scan.start()

    def stop(self) -> None:
        """Abandon an unfinished start-up scan."""
        self._stop.set()
        if self._scan.is_alive():
            self._scan.join(5)

    def synced(self, step: Synced) -> None:
        """Flow handler: an acked clip becomes a candidate."""
        with self._acked_lock:
            self._acked.add(step.clip_id)

    def tick(self) -> None:
        """Run a pass when the interval has passed and the start-up scan is done (every 0.5 s)."""
        if time.monotonic() - self._last < self.interval_s:
            return
        if not self.copies.ready.is_set() and self._scan.is_alive():
            return  # the start-up scan is still running (a failed one is retried by the pass)
        self._last = time.monotonic()
        try:
            self.run_pass()
        except Exception:  # a failed pass must not stop housekeeping; the next one retries
            logger.exception("retention pass failed")

    def run_pass(self) -> list[tuple[str, str]]:
        """Tidy the active set, select and purge; returns what was purged as (clip_id, reason)."""
        self.copies.load()  # no-op once the start-up scan is done
        active = self._active_acked()
        self.copies.catch_up()
        records = self._candidates(active)
        usage = shutil.disk_usage(self.s.store.root)
        cfg = self.s.cfg
        chosen = select_purges(
            records, self.clock(), cfg.policy, usage.free, usage.total, cfg.retention
        )
        done = [(c, r) for c, r in chosen[:MAX_PURGES_PER_PASS] if self.purge(c, r)]
        if done:
            logger.info("retention pass purged %d local copies", len(done))
        return done

    def _load(self) -> None:
        """The background start-up scan (logged, never raised)."""
        started = time.monotonic()
        try:
            self.copies.load(self._stop)
        except Exception:  # the next pass retries the scan in the housekeeping thread
            logger.exception("retention: archive scan failed")
            return
        took = time.monotonic() - started
        logger.info("retention: %d archived local copies (scan %.1f s)", len(self.copies), took)

    def _active_acked(self) -> list[Record]:
        """The acked clips known to be active, each read now (a whole-set scan after a reload)."""
        cfg = self.s.cfg
        if cfg is not self._scanned_cfg:
            self._tidy_active()
            self._scanned_cfg = cfg
        with self._acked_lock:
            known = list(self._acked)
        records = [r for r in map(self.s.index.get, known) if r is not None]
        keep = [r for r in records if acked(r)]
        gone = set(known) - {r["clip_id"] for r in keep}
        with self._acked_lock:
            self._acked -= gone
        return keep

    def _tidy_active(self) -> None:
        """Archive finished clips, reclassify the rest under the rules in force (at start-up
        and after a reload), and note the acked ones (whole set)."""
        policy = self.s.cfg.delete_policy
        records = self.s.index.active()
        live = [r for r in records if not archive_if_finished(self.s.index, r, policy)]
        live = [r for r in live if has_local_copy(r)]
        self._reclassify(live)
        if self.copies.ready.is_set():
            self.copies.catch_up()
            self._reclassify(self.copies.records(), keep_longer=True)
        with self._acked_lock:
            self._acked |= {r["clip_id"] for r in live if acked(r)}

    def _candidates(self, active: list[Record]) -> list[Record]:
        """Active records plus archived local copies (the active version wins a crash's twin)."""
        ids = {r["clip_id"] for r in active}
        return active + [r for r in self.copies.records() if r["clip_id"] not in ids]

    def _reclassify(self, records: list[Record], keep_longer: bool = False) -> None:
        """The rules may have changed (a reload): each stored class as they give it now."""
        for record in records:
            cls = reclassified(record, self.s.cfg.retention, keep_longer)
            if cls is not None:
                self.s.index.update(record["clip_id"], retention_class=cls)
                record["retention_class"] = cls
                logger.info("clip %s reclassified %s", record["clip_id"][:12], cls)

    def purge(self, clip_id: str, reason: str) -> bool:
        """Purge one local copy if it is still acked and unheld; custody first, then the file."""
        record = self.s.index.get(clip_id)
        if record is None or not purgeable(record):
            return False  # held or changed since selection
        entry = self.s.custody.append(
            "local_copy_purged",
            clip=clip_id,
            sha256=record["sha256"],
            device_id=record.get("device_id"),
            reason=reason,
            local_path=record.get("local_path"),
            synced_at=record.get("synced_at"),
            retention_class=record.get("retention_class"),
            keep_days=keep_days(record, self.s.cfg.policy, self.s.cfg.retention),
        )
        _unlink(record.get("local_path"))
        _unlink(record.get("thumbnail"))
        changes = lifecycle.purged(iso(self.clock()), reason, entry["seq"])
        lifecycle.advance(self.s.index, clip_id, self.s.cfg.delete_policy, **changes)
        self.copies.forget(clip_id)
        self._log(record, reason)
        self.s.flow.publish(Purged(clip_id))
        return True

    def _log(self, record: Record, reason: str) -> None:
        logger.info(
            "local copy of %s purged (%s)",
            record.get("file_name"),
            reason,
            extra={
                "DOCK_ID": self.s.cfg.dock.id,
                "DEVICE_ID": record.get("device_id") or "",
                "CLIP_SHA256": record["clip_id"],
            },
        )
