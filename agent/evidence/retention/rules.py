"""Which local copies to purge (pure): expired acked copies, then the oldest under disk pressure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from agent.config import PolicySection
from agent.evidence.lifecycle import purgeable
from agent.evidence.retention.classes import keep_days
from agent.evidence.retention.settings import RetentionSection
from agent.timebase import parse_iso

RETENTION_EXPIRED = "retention_expired"
DISK_PRESSURE = "disk_pressure"
Record = dict[str, Any]


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
