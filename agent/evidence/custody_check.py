"""Central's check of a dock's custody head: a later head must extend the one seen before."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.evidence.custody import ZERO_HASH, entry_hash
from agent.evidence.lifecycle import has_local_copy, recorder_handled, state_of

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


# ---- the custody log against the index (`dock-agent verify`) ---------------------------------


@dataclass
class _Facts:
    """What the custody log says happened, reduced to what the index must agree with."""

    offloaded: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq -> (hash, sha256)
    purged: dict[str, int] = field(default_factory=dict)  # clip -> seq
    deleted: dict[str, tuple[int, str]] = field(default_factory=dict)  # or found missing
    exports: list[tuple[int, str]] = field(default_factory=list)  # (seq, clip)


def _clip_of(entry: Mapping[str, Any]) -> str:
    return str(entry.get("clip") or entry.get("sha256") or "")


def custody_facts(entries: Iterable[Mapping[str, Any]]) -> _Facts:
    """Offloads by seq, purges, recorder deletions and exports from custody entries."""
    facts = _Facts()
    for e in entries:
        seq, event = e.get("seq"), e.get("event")
        if not isinstance(seq, int):
            continue
        if event == "clip_offloaded":
            facts.offloaded[seq] = (str(e.get("hash")), str(e.get("sha256")))
        elif event == "local_copy_purged":
            facts.purged.setdefault(_clip_of(e), seq)
        elif event in ("recorder_clip_deleted", "recorder_clip_missing"):
            facts.deleted.setdefault(_clip_of(e), (seq, str(event)))
        elif event == "exported":
            facts.exports.append((seq, _clip_of(e)))
    return facts


@dataclass(frozen=True)
class _Row:
    """The fields of an index row the cross-check needs (kept small for 150k clips)."""

    state: str
    purged: bool
    recorder_handled: bool
    custody_seq: Any
    custody_hash: Any


def _row(record: Mapping[str, Any]) -> _Row:
    return _Row(
        state_of(record),
        not has_local_copy(record),
        recorder_handled(record),
        record.get("custody_seq"),
        record.get("custody_hash"),
    )


def _offload_problem(clip: str, row: _Row, facts: _Facts) -> str | None:
    name = f"clip {clip[:12]}"
    found = facts.offloaded.get(row.custody_seq) if isinstance(row.custody_seq, int) else None
    if found is None:
        return f"{name}: its clip_offloaded custody entry (seq {row.custody_seq}) is missing"
    if found[0] != row.custody_hash:
        return (
            f"{name}: clip_offloaded custody entry seq {row.custody_seq} has hash "
            f"{found[0][:16]}, the index says {str(row.custody_hash)[:16]}"
        )
    if found[1] != clip:
        return f"{name}: custody entry seq {row.custody_seq} is the offload of {found[1][:12]}"
    return None


def _row_problems(clip: str, row: _Row, facts: _Facts) -> list[str]:
    name = f"clip {clip[:12]}"
    problems = [p for p in [_offload_problem(clip, row, facts)] if p]
    if row.purged and clip not in facts.purged:
        problems.append(f"{name}: purged in the index but no local_copy_purged custody entry")
    if row.recorder_handled and clip not in facts.deleted:
        problems.append(
            f"{name}: recorder_deleted in the index but no recorder_clip_deleted "
            "(or recorder_clip_missing) entry"
        )
    return problems


def _log_problems(rows: dict[str, _Row], facts: _Facts, horizon: float) -> list[str]:
    problems = []
    for clip, seq in facts.purged.items():
        row = rows.get(clip)
        if seq <= horizon and (row is None or not row.purged):
            what = "unknown to the index" if row is None else f"index state {row.state!r}"
            problems.append(f"custody seq {seq}: local_copy_purged for clip {clip[:12]}, {what}")
    for clip, (seq, event) in facts.deleted.items():
        row = rows.get(clip)
        if seq <= horizon and (row is None or not row.recorder_handled):
            what = "unknown to the index" if row is None else "index says not deleted"
            problems.append(f"custody seq {seq}: {event} of {clip[:12]}, {what}")
    for seq, clip in facts.exports:
        if seq <= horizon and clip not in rows:
            problems.append(f"custody seq {seq}: exported clip {clip[:12]} unknown to the index")
    return problems


def cross_check(
    entries: Iterable[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]],
    horizon: int | None = None,
) -> list[str]:
    """Each disagreement between the custody log and the index (purges, deletions, exports).

    Every index row is judged against all of `entries`; entries after seq `horizon` are
    newer than the index that was read, so the index need not show them yet.
    """
    facts = custody_facts(entries)
    rows: dict[str, _Row] = {}
    problems: list[str] = []
    for record in records:
        clip = str(record["clip_id"])
        rows[clip] = row = _row(record)
        problems.extend(_row_problems(clip, row, facts))
    limit = float("inf") if horizon is None else horizon
    return problems + _log_problems(rows, facts, limit)
