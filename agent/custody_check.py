"""Central's check of a dock's custody head: a later head must extend the one seen before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.custody import ZERO_HASH, entry_hash

Head = tuple[int, str]


def as_head(head: Head | Mapping[str, Any]) -> Head:
    """(seq, hash) from a tuple or from R/status `custody_head` ({"seq", "hash"})."""
    if isinstance(head, Mapping):
        return int(head["seq"]), str(head["hash"])
    return int(head[0]), str(head[1])


def _links(entries: Iterable[Mapping[str, Any]], old: Head) -> Head | None:
    """Walk entries after `old`; the head they reach, or None at the first broken link."""
    seq, prev = old
    for entry in entries:
        at = entry.get("seq")
        if not isinstance(at, int) or at < seq:
            return None
        if at == seq:  # the old head itself, sent for context: it must be the same entry
            if seq == 0 or entry.get("hash") != prev:
                return None
            continue
        if at != seq + 1 or entry.get("prev") != prev:
            return None
        if entry.get("hash") != entry_hash(dict(entry)):
            return None
        seq, prev = at, str(entry["hash"])
    return seq, prev


def chain_extends(
    entries: Iterable[Mapping[str, Any]],
    old_head: Head | Mapping[str, Any],
    new_head: Head | Mapping[str, Any],
) -> bool:
    """Whether `entries` (those after old_head, up to new_head) chain old_head to new_head.

    False means rewritten history: a lower seq, a different hash at a known seq, a gap,
    or an entry whose recomputed hash or `prev` link does not match.
    """
    old, new = as_head(old_head), as_head(new_head)
    if old[0] == 0:
        old = (0, ZERO_HASH)
    if new[0] < old[0]:
        return False
    if new[0] == old[0]:
        return new[1] == old[1]
    return _links(entries, old) == new
