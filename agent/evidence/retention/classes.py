"""Retention classes: which class a clip falls in, and how long its local copy stays."""

from __future__ import annotations

from typing import Any

from agent.config import PolicySection
from agent.evidence.retention.settings import RetentionSection

Record = dict[str, Any]


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
