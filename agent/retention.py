"""Retention: clip classes by rule, holds, and purging of local copies only after upstream ack."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import PolicySection, RetentionSection
from agent.durable import fsync_dir
from agent.timebase import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from agent.custody import CustodyLog
    from agent.index import ClipIndex
    from agent.services import Services

logger = logging.getLogger(__name__)

RETENTION_EXPIRED = "retention_expired"
DISK_PRESSURE = "disk_pressure"
MAX_PURGES_PER_PASS = 200
Record = dict[str, Any]


class HoldError(Exception):
    """A hold or release was refused; the message says why."""


# ---- classes --------------------------------------------------------------------------------


def _rank(name: str, rules: RetentionSection) -> tuple[float, int]:
    """Longer local keep first; on a tie, the class listed later (the more serious one)."""
    order = next((i for i, c in enumerate(rules.classes) if c.name == name), -1)
    return rules.keep_days(name), order


def classify(record: Record, rules: RetentionSection) -> str:
    """The retention class of a clip: of every matching rule, the longest-kept class."""
    flags = set(record.get("flags") or [])
    matches = [
        r.retention_class
        for r in rules.rule
        if r.flag in flags and r.media_type in ("", record.get("media_type"))
    ]
    if not matches:
        return rules.default_class
    return max(matches, key=lambda name: _rank(name, rules))


def keep_days(record: Record, policy: PolicySection, rules: RetentionSection) -> float:
    """Days the local copy stays after ack: local_retention_days, extended by the class."""
    stored = str(record.get("retention_class") or rules.default_class)
    by_class = max(rules.keep_days(stored), rules.keep_days(classify(record, rules)))
    return max(policy.local_retention_days, by_class)


# ---- selection (pure) -----------------------------------------------------------------------


def acked(record: Record) -> bool:
    """Whether central holds the clip (its fin succeeded) and a local copy is still here."""
    return record.get("state") == "synced"


def purgeable(record: Record) -> bool:
    """Acked, not held: the only clips a purge may ever touch."""
    return acked(record) and not record.get("held")


def _time(value: Any) -> datetime | None:
    try:
        return parse_iso(str(value)) if value else None
    except ValueError:
        return None


def _expired(record: Record, now: datetime, policy: PolicySection, rules: RetentionSection) -> bool:
    synced_at = _time(record.get("synced_at"))
    if synced_at is None:
        return False  # no ack time: its retention cannot be counted, so it has not ended
    return now - synced_at >= timedelta(days=keep_days(record, policy, rules))


def pressure_need(free_bytes: int, total_bytes: int, policy: PolicySection) -> int:
    """Bytes to free to get back above both the disk reserve and the disk_low threshold."""
    target = max(policy.disk_reserve_bytes, math.ceil(total_bytes * policy.disk_low_pct / 100))
    return max(0, target - free_bytes)


def _oldest_first(record: Record) -> tuple[str, str]:
    return str(record.get("synced_at") or record.get("offloaded_at") or ""), record["clip_id"]


def select_purges(
    records: Iterable[Record],
    now: datetime,
    policy: PolicySection,
    free_bytes: int,
    total_bytes: int,
    rules: RetentionSection | None = None,
) -> list[tuple[str, str]]:
    """(clip_id, reason) to purge: expired acked copies, then oldest acked ones under pressure."""
    rules = rules or RetentionSection()
    candidates = sorted((r for r in records if purgeable(r)), key=_oldest_first)
    chosen = [(r, RETENTION_EXPIRED) for r in candidates if _expired(r, now, policy, rules)]
    need = pressure_need(free_bytes, total_bytes, policy)
    need -= sum(int(r.get("size") or 0) for r, _ in chosen)
    picked = {r["clip_id"] for r, _ in chosen}
    for record in candidates:
        if need <= 0:
            break
        if record["clip_id"] not in picked:
            chosen.append((record, DISK_PRESSURE))
            need -= int(record.get("size") or 0)
    return [(r["clip_id"], reason) for r, reason in chosen]


# ---- holds ----------------------------------------------------------------------------------


def set_hold(
    index: ClipIndex,
    custody: CustodyLog,
    clip_id: str,
    reason: str,
    release: bool,
    by: str,
) -> dict[str, Any]:
    """Hold (or release) a clip's local copy past retention; logged in custody (`hold`)."""
    if not reason or not reason.strip():
        raise HoldError("a hold needs a reason")
    record = index.get(clip_id)
    if record is None:
        raise HoldError(f"unknown clip {clip_id}")
    if not release and record.get("state") == "purged":
        raise HoldError(f"clip {clip_id[:12]}: its local copy was already purged")
    entry = custody.append(
        "hold", clip=clip_id, sha256=record["sha256"], reason=reason, release=release, by=by
    )
    updated = index.update(
        clip_id,
        held=not release,
        hold_reason=None if release else reason,
        hold_by=by,
        hold_at=entry["ts"],
    )
    logger.info("clip %s %s by %s: %s", clip_id[:12], "released" if release else "held", by, reason)
    return {
        "clip_id": clip_id,
        "held": updated.get("held"),
        "hold_reason": updated.get("hold_reason"),
        "state": updated.get("state"),
        "custody_seq": entry["seq"],
        "custody_hash": entry["hash"],
    }


# ---- the purger (daemon plugin) -------------------------------------------------------------


def finished(record: Record, delete_policy: str) -> bool:
    """Nothing left to do for this clip: purged here and gone from the recorder (or kept there)."""
    if record.get("state") != "purged":
        return False
    return bool(record.get("recorder_deleted")) or delete_policy == "never"


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
    """Daemon plugin: periodically purges local copies that are acked and due (or under pressure)."""

    def __init__(self, services: Services, clock: Callable[[], datetime] = utcnow) -> None:
        """Purge within `services`' store; `clock` is the trusted time."""
        self.s = services
        self.clock = clock
        self.interval_s = services.cfg.retention.purge_interval_s
        self._last = -math.inf

    def start(self) -> None:
        """Nothing to start: passes run from tick()."""

    def stop(self) -> None:
        """Nothing to stop."""

    def tick(self) -> None:
        """Run a pass when the purge interval has passed (called by the daemon every 0.5 s)."""
        if time.monotonic() - self._last < self.interval_s:
            return
        self._last = time.monotonic()
        try:
            self.run_pass()
        except Exception:  # a failed pass must not stop housekeeping; the next one retries
            logger.exception("retention pass failed")

    def run_pass(self) -> list[tuple[str, str]]:
        """Reclassify, select and purge; returns what was purged as (clip_id, reason)."""
        records = self.s.index.active()
        self._archive_finished(records)
        records = [r for r in records if r.get("state") != "purged"]
        self._reclassify(records)
        usage = shutil.disk_usage(self.s.store.root)
        cfg = self.s.cfg
        chosen = select_purges(
            records, self.clock(), cfg.policy, usage.free, usage.total, cfg.retention
        )
        done = [(c, r) for c, r in chosen[:MAX_PURGES_PER_PASS] if self.purge(c, r)]
        if done:
            logger.info("retention pass purged %d local copies", len(done))
        return done

    def _archive_finished(self, records: list[Record]) -> None:
        """Purged clips whose recorder copy has since gone leave the active set."""
        policy = self.s.cfg.policy.delete_from_recorder
        for record in records:
            if finished(record, policy):
                self.s.index.archive(record["clip_id"])

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
        self._log(record, reason)
        if finished(updated, self.s.cfg.policy.delete_from_recorder):
            self.s.index.archive(clip_id)
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
