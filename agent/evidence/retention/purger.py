"""The purger (daemon plugin): removes local copies that are acked and due, custody first."""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.durable import fsync_dir
from agent.evidence.lifecycle import archive_if_finished, has_local_copy, purgeable
from agent.evidence.retention.classes import classify, keep_days
from agent.evidence.retention.copies import LocalCopies
from agent.evidence.retention.rules import select_purges
from agent.timebase import iso, utcnow

if TYPE_CHECKING:
    from agent.daemon.services import Services

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


class Purger:
    """Daemon plugin: purges local copies that are acked and due (or under disk pressure)."""

    def __init__(self, services: Services, clock: Callable[[], datetime] = utcnow) -> None:
        """Purge within `services`' store; `clock` is the trusted time."""
        self.s = services
        self.clock = clock
        self.interval_s = services.cfg.retention.purge_interval_s
        self.copies = LocalCopies(services.index)
        self._last = -math.inf
        self._stop = threading.Event()
        self._scan = threading.Thread(target=self._load, name="purger-scan", daemon=True)

    def start(self) -> None:
        """Scan the archive in the background: start-up does not wait for it."""
        self._scan.start()

    def stop(self) -> None:
        """Abandon an unfinished start-up scan."""
        self._stop.set()
        if self._scan.is_alive():
            self._scan.join(5)

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
        active = self._tidy_active()
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

    def _tidy_active(self) -> list[Record]:
        """Archive finished clips, reclassify the rest; the active records with a local copy."""
        policy = self.s.cfg.delete_policy
        records = self.s.index.active()
        live = [r for r in records if not archive_if_finished(self.s.index, r, policy)]
        live = [r for r in live if has_local_copy(r)]
        self._reclassify(live)
        return live

    def _candidates(self, active: list[Record]) -> list[Record]:
        """Active records plus archived local copies (the active version wins a crash's twin)."""
        ids = {r["clip_id"] for r in active}
        return active + [r for r in self.copies.records() if r["clip_id"] not in ids]

    def _reclassify(self, records: list[Record]) -> None:
        """Flags grow after offload (analysis adds `marked`): keep retention_class current."""
        for record in records:
            cls = classify(record, self.s.cfg.retention)
            if cls != record.get("retention_class"):
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
        updated = self.s.index.update(
            clip_id,
            state="purged",
            purged_at=iso(self.clock()),
            purge_reason=reason,
            purge_custody_seq=entry["seq"],
        )
        self.copies.forget(clip_id)
        self._log(record, reason)
        archive_if_finished(self.s.index, updated, self.s.cfg.delete_policy)
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
