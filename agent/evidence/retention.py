"""Retention: clip classes by rule, holds, and purging of local copies only after upstream ack."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.config import PolicySection, RetentionSection
from agent.durable import fsync_dir
from agent.timebase import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from agent.daemon.services import Services
    from agent.evidence.custody import CustodyLog
    from agent.evidence.index import ClipIndex

logger = logging.getLogger(__name__)

RETENTION_EXPIRED = "retention_expired"
DISK_PRESSURE = "disk_pressure"
MAX_PURGES_PER_PASS = 200
SYNCED = b'"state":"synced"'  # in every archive line whose state is synced (compact JSON)
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


# ---- finished clips leave the active set ---------------------------------------------------


def finished(record: Record, delete_policy: str) -> bool:
    """Nothing left for the live workflow: acked upstream and the recorder copy handled."""
    if record.get("state") not in ("synced", "purged"):
        return False
    return bool(record.get("recorder_deleted")) or delete_policy == "never"


def archive_if_finished(index: ClipIndex, record: Record, delete_policy: str) -> bool:
    """Move a finished clip from the active set to the archive; True when it is finished."""
    if not finished(record, delete_policy):
        return False
    index.archive(record["clip_id"])
    return True


# ---- local copies of archived clips ---------------------------------------------------------


class LocalCopy(NamedTuple):
    """What retention needs of an archived clip whose local copy is still here (kept small)."""

    synced_at: str | None
    offloaded_at: str | None
    size: int
    flags: tuple[str, ...]
    media_type: str | None
    retention_class: str | None
    held: bool

    @classmethod
    def of(cls, record: Record) -> LocalCopy:
        """The retention fields of a record."""
        return cls(
            record.get("synced_at"),
            record.get("offloaded_at"),
            int(record.get("size") or 0),
            tuple(sys.intern(str(f)) for f in record.get("flags") or ()),
            _interned(record.get("media_type")),
            _interned(record.get("retention_class")),
            bool(record.get("held")),
        )

    def record(self, clip_id: str) -> Record:
        """A minimal synced record for select_purges."""
        return {"clip_id": clip_id, "state": "synced", **self._asdict(), "flags": list(self.flags)}


def _interned(value: Any) -> str | None:
    """One shared string per distinct value (classes, media types repeat across copies)."""
    return sys.intern(str(value)) if value is not None else None


def _parsed(line: bytes) -> Record | None:
    """An archive line's record; None (logged) when unreadable, so it is never purged."""
    try:
        record = json.loads(line)
    except ValueError:
        logger.warning("archive: unreadable line skipped by retention")
        return None
    return record if isinstance(record, dict) else None


class LocalCopies:
    """Archived clips whose local copy is still here, followed from the shards (any writer)."""

    def __init__(self, index: ClipIndex) -> None:
        """Empty until load(); the shards are read by an ArchiveFollower."""
        self._follower = index.follow_archive()
        self._copies: dict[str, LocalCopy] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def load(self, stop: threading.Event | None = None) -> None:
        """The start-up scan, shard by shard; resumes if stopped, no-op once done."""
        with self._lock:
            if self.ready.is_set():
                return
            for clip_id, line in self._follower.poll(stop):
                self._apply(clip_id, line)
            if stop is None or not stop.is_set():
                self.ready.set()

    def catch_up(self) -> None:
        """Apply what was archived, purged, held or released since the last look."""
        with self._lock:
            for clip_id, line in self._follower.poll():
                self._apply(clip_id, line)

    def forget(self, clip_id: str) -> None:
        """The local copy of `clip_id` is gone."""
        with self._lock:
            self._copies.pop(clip_id, None)

    def records(self) -> list[Record]:
        """Minimal records of every local copy, for selection."""
        with self._lock:
            return [copy.record(clip_id) for clip_id, copy in self._copies.items()]

    def __len__(self) -> int:
        """How many archived local copies are known."""
        return len(self._copies)

    def _apply(self, clip_id: str, line: bytes) -> None:
        """A later version wins: synced keeps (or refreshes) the entry, anything else drops it."""
        record = _parsed(line) if SYNCED in line else None  # most lines: purged, not parsed
        if record is not None and record.get("state") == "synced":
            self._copies[sys.intern(clip_id)] = LocalCopy.of(record)
        else:
            self._copies.pop(clip_id, None)


# ---- the purger (daemon plugin) -------------------------------------------------------------


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
        policy = self.s.cfg.policy.delete_from_recorder
        records = self.s.index.active()
        live = [r for r in records if not archive_if_finished(self.s.index, r, policy)]
        live = [r for r in live if r.get("state") != "purged"]
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
        archive_if_finished(self.s.index, updated, self.s.cfg.policy.delete_from_recorder)
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
