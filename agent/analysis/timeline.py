"""Timeline integrity (pure): gaps, overlaps and interruptions between a recorder's clips."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.findings import Finding, warning
from agent.notes.model import NoteDraft
from firmware_interface.base import RecorderEvent

STOP_REASONS = frozenset({"low_battery", "storage_full", "manual", "fault", "overheat"})
GAP_BEFORE, GAP_AFTER, MARKED = "gap_before", "gap_after", "marked"

ToTrueTime = Callable[[datetime], datetime]


@dataclass(frozen=True)
class TimelineClip:
    """One clip on the timeline, in true time."""

    sha256: str
    start: datetime  # aware, true time
    end: datetime
    device_id: str
    file_name: str
    interruptions: Sequence[tuple[float, float]] = ()  # (offset_s, jump_s) from probing


@dataclass(frozen=True)
class TimelinePolicy:
    """The numbers gap analysis judges by (SPEC 4 [policy])."""

    gap_threshold_s: float = 2.0
    session_break_s: float = 900.0
    cause_tolerance_s: float = 5.0  # how far from a clip's end an event still explains it
    mark_tolerance_s: float = 1.0  # recorder clocks tick in whole seconds


@dataclass
class TimelineResult:
    """Note drafts, per-clip flags (sha256 -> flags) and findings about unreadable events."""

    notes: list[NoteDraft] = field(default_factory=list)
    flags: dict[str, set[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class _Event:
    """A recorder event placed in true time."""

    ts: datetime
    event: str
    reason: str | None


def analyse(
    clips: Iterable[TimelineClip],
    events: Iterable[Any],
    to_true: ToTrueTime,
    policy: TimelinePolicy,
) -> TimelineResult:
    """Find gaps, overlaps and in-clip interruptions, with causes from the event log."""
    result = TimelineResult()
    placed = _place_events(events, to_true, result.findings)
    by_device: dict[str, list[TimelineClip]] = {}
    for clip in clips:
        by_device.setdefault(clip.device_id, []).append(clip)
        result.flags.setdefault(clip.sha256, set())
    for device_clips in by_device.values():
        _analyse_device(
            sorted(device_clips, key=lambda c: (c.start, c.end)), placed, policy, result
        )
    return result


class _EventIndex:
    """Recorder events sorted by true time, searchable by window."""

    def __init__(self, events: list[_Event]) -> None:
        self._events = sorted(events, key=lambda e: e.ts)
        self._times = [e.ts for e in self._events]

    def within(self, at: datetime, before_s: float, after_s: float) -> list[_Event]:
        """Events from `before_s` before `at` to `after_s` after it."""
        lo = bisect_left(self._times, at - timedelta(seconds=before_s))
        hi = bisect_right(self._times, at + timedelta(seconds=after_s))
        return self._events[lo:hi]


def _place_events(
    events: Iterable[Any], to_true: ToTrueTime, findings: list[Finding]
) -> _EventIndex:
    """Put every readable event in true time; each unreadable one becomes a finding."""
    placed: list[_Event] = []
    for number, event in enumerate(events, 1):
        try:
            placed.append(_place(event, to_true))
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            findings.append(
                warning("event_unreadable", f"recorder event {number} skipped: {exc}", index=number)
            )
    return _EventIndex(placed)


def _place(event: RecorderEvent, to_true: ToTrueTime) -> _Event:
    """One event in true time; raises on anything malformed."""
    if not isinstance(event.ts, datetime) or not isinstance(event.event, str):
        raise TypeError(f"expected a timestamp and an event name, got {event!r}")
    fields = event.fields if isinstance(event.fields, dict) else {}
    reason = fields.get("reason")
    return _Event(to_true(event.ts), event.event, reason if isinstance(reason, str) else None)


def _analyse_device(
    clips: list[TimelineClip], events: _EventIndex, policy: TimelinePolicy, result: TimelineResult
) -> None:
    """Walk one recorder's clips in start order, comparing each with the latest end so far."""
    frontier: TimelineClip | None = None
    for clip in clips:
        if _is_marked(clip, events, policy):
            result.flags[clip.sha256].add(MARKED)
        result.notes.extend(_interruption_notes(clip, events, policy))
        if frontier is not None:
            _judge_pause(frontier, clip, events, policy, result)
        if frontier is None or clip.end > frontier.end:
            frontier = clip


def _judge_pause(
    prev: TimelineClip,
    clip: TimelineClip,
    events: _EventIndex,
    policy: TimelinePolicy,
    result: TimelineResult,
) -> None:
    """A gap, an overlap, a new session or back-to-back segments."""
    pause = (clip.start - prev.end).total_seconds()
    pair = (prev.sha256, clip.sha256)
    if policy.gap_threshold_s < pause <= policy.session_break_s:
        cause = _cause(prev.end, events, policy)
        result.notes.append(NoteDraft("gap", clip.device_id, prev.end, clip.start, cause, pair))
        result.flags[prev.sha256].add(GAP_AFTER)
        result.flags[clip.sha256].add(GAP_BEFORE)
    elif pause < -policy.gap_threshold_s:
        end = min(prev.end, clip.end)
        cause = _overlap_cause(clip.start, prev.end, events, policy)
        result.notes.append(NoteDraft("overlap", clip.device_id, clip.start, end, cause, pair))


def _interruption_notes(
    clip: TimelineClip, events: _EventIndex, policy: TimelinePolicy
) -> list[NoteDraft]:
    """One note per timestamp jump found inside the clip."""
    notes = []
    for offset_s, jump_s in clip.interruptions:
        at = clip.start + timedelta(seconds=offset_s)
        end = at + timedelta(seconds=abs(jump_s))
        cause = _cause(at, events, policy)
        notes.append(NoteDraft("interruption", clip.device_id, at, end, cause, (clip.sha256,)))
    return notes


def _is_marked(clip: TimelineClip, events: _EventIndex, policy: TimelinePolicy) -> bool:
    """True when the officer pressed mark while this clip was recording."""
    span = (clip.end - clip.start).total_seconds()
    window = events.within(clip.start, policy.mark_tolerance_s, span + policy.mark_tolerance_s)
    return any(e.event == "mark" for e in window)


def _cause(at: datetime, events: _EventIndex, policy: TimelinePolicy) -> str:
    """Why recording stopped at `at`, as the recorder logged it near then, else 'unknown'."""
    tol = policy.cause_tolerance_s
    ranked = []
    for event in events.within(at, tol, tol):
        rank = _cause_rank(event)
        if rank is not None:
            distance = abs((event.ts - at).total_seconds())
            ranked.append((rank[0], distance, rank[1]))
    return min(ranked)[2] if ranked else "unknown"


def _cause_rank(event: _Event) -> tuple[int, str] | None:
    """(priority, cause) of an event that explains a stop; a stated reason wins."""
    if event.event == "rec_stop" and event.reason in STOP_REASONS:
        return 0, event.reason
    if event.event == "fault":
        return 1, "fault"
    if event.event == "power_off":
        return 2, "power_off"
    return None


def _overlap_cause(
    start: datetime, end: datetime, events: _EventIndex, policy: TimelinePolicy
) -> str:
    """An overlap is most often a clock set back; say so when the log shows one."""
    tol = policy.cause_tolerance_s
    span = max(0.0, (end - start).total_seconds())
    window = events.within(start, tol, span + tol)
    return "clock_set" if any(e.event == "clock_set" for e in window) else "unknown"
