"""Sync order and eligibility (pure): marked and late clips first, then the oldest."""

from __future__ import annotations

from agent.sync.queue import (
    DEFAULT_BACKOFF,
    Backoff,
    idle_wait,
    next_due,
    priority,
    retry_delay,
    to_send,
)


def rec(clip_id: str, start: str, flags: list[str] | None = None, **kw: object) -> dict:
    return {
        "clip_id": clip_id,
        "recorded_start": start,
        "flags": flags or [],
        "state": "offloaded",
        "analysed": True,
        **kw,
    }


def test_marked_and_late_go_first_then_oldest() -> None:
    records = [
        rec("new", "2026-11-21T10:00:00+08:00"),
        rec("old", "2026-11-20T10:00:00+08:00"),
        rec("marked", "2026-11-21T11:00:00+08:00", ["marked"]),
        rec("late", "2026-11-21T12:00:00+08:00", ["late_offload", "gap_after"]),
    ]
    pending = {r["clip_id"]: priority(r) for r in records}
    order = []
    while (due := next_due(pending, 100.0, {})) is not None:
        order.append(due)
        del pending[due]
    assert order == ["marked", "late", "old", "new"]
    assert priority(records[2]) < priority(records[1])


def test_only_analysed_unacked_clips_and_unproven_acks_once_they_can_be_proved() -> None:
    ok = rec("ok", "2026-11-21T10:00:00+08:00")
    probing = rec("probing", "2026-11-21T10:00:00+08:00", analysed=False)
    sent = rec("sent", "2026-11-21T10:00:00+08:00", state="synced", ack_proven=True)
    old = rec("old", "2026-11-21T10:00:00+08:00", state="synced")  # acked before the field
    unproven = rec("unproven", "2026-11-21T10:00:00+08:00", state="synced", ack_proven=False)
    purged = rec("purged", "2026-11-21T10:00:00+08:00", state="purged", ack_proven=False)
    can_prove = [
        r["clip_id"] for r in (ok, probing, sent, old, unproven, purged) if to_send(r, True)
    ]
    assert can_prove == ["ok", "unproven"]
    cannot = [r["clip_id"] for r in (ok, probing, sent, old, unproven, purged) if to_send(r, False)]
    assert cannot == ["ok"]  # without central's key a resend proves nothing: not sent again


def test_retries_back_off_doubling_to_a_cap() -> None:
    assert [retry_delay(n, 30.0, 900.0) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]
    assert retry_delay(0, 30.0, 900.0) == 30.0  # never sooner than the first delay


def test_the_default_backoff_is_30_s_doubling_to_15_min() -> None:
    assert [DEFAULT_BACKOFF.delay(n) for n in (1, 2, 5, 6, 9)] == [30, 60, 480, 900, 900]
    assert [Backoff(0.5, 2.0).delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]


def test_the_queue_sends_in_priority_order_skipping_clips_waiting_out_a_failure() -> None:
    pending = {
        "new": priority(rec("new", "2026-11-21T10:00:00+08:00")),
        "old": priority(rec("old", "2026-11-20T10:00:00+08:00")),
        "marked": priority(rec("marked", "2026-11-21T11:00:00+08:00", ["marked"])),
    }
    assert next_due(pending, 100.0, {}) == "marked"
    assert next_due(pending, 100.0, {"marked": 130.0}) == "old"
    assert next_due({"marked": pending["marked"]}, 100.0, {"marked": 130.0}) is None
    assert next_due({}, 100.0, {}) is None


def test_the_thread_sleeps_until_the_earliest_retry_at_most_the_cap() -> None:
    pending = {"a": (1, ""), "b": (1, "")}
    assert idle_wait(pending, 100.0, {"a": 130.0, "b": 110.0}, 60.0) == 10.0
    assert idle_wait(pending, 100.0, {"a": 500.0}, 60.0) == 60.0
    assert idle_wait(pending, 100.0, {"a": 90.0}, 60.0) == 0.0
    assert idle_wait({}, 100.0, {"gone": 110.0}, 60.0) == 60.0  # only pending clips count
