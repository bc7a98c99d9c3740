"""Retention classes: which class a clip falls in, and how long its local copy stays.

A clip's `retention_class` is worked out here only, and stored with the flags that make it:
`flagged` gives the one index change that sets both (offload, analysis), `reclassified` the
class a reload of the rules gives a stored clip. Everyone else (the manifest, purging) reads
the stored value.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def flagged(record: Record, added: Iterable[str], rules: RetentionSection) -> Record:
    """The index change that gives a clip `added` flags: the flags, and the class they make."""
    flags = sorted(set(record.get("flags") or []) | set(added))
    return {"flags": flags, "retention_class": classify({**record, "flags": flags}, rules)}


def reclassified(record: Record, rules: RetentionSection, keep_longer: bool = False) -> str | None:
    """The class new rules (a reload) give a stored clip, or None when its stored one stands.

    `keep_longer`: the stored class stands when it keeps the copy longer (an archived copy
    never loses time to a reload; an active clip takes the new rules' class as it is).
    """
    stored = str(record.get("retention_class") or rules.default_class)
    fresh = classify(record, rules)
    if fresh == stored or (keep_longer and _rank(stored, rules) >= _rank(fresh, rules)):
        return None
    return fresh


def keep_days(record: Record, policy: PolicySection, rules: RetentionSection) -> float:
    """Days the local copy stays after ack: local_retention_days, extended by its class."""
    stored = str(record.get("retention_class") or rules.default_class)
    return max(policy.local_retention_days, rules.keep_days(stored))
