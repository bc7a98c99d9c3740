"""The sync queue's rules (pure): what to send, in which order, and when to try again."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from agent.evidence.lifecycle import awaiting_proof, awaiting_sync


def to_send(record: dict[str, Any], proves_acks: bool) -> bool:
    """Not acked yet; or acked without proof while acks can now be proved (SPEC 11): a clip
    acked before central's key was enrolled is sent again for a receipt that frees it."""
    return awaiting_sync(record) or (proves_acks and awaiting_proof(record))


def retry_delay(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: `first`, doubling, at most `cap`."""
    return min(first * 2 ** max(failures - 1, 0), cap)


@dataclass(frozen=True)
class Backoff:
    """How long sync waits after failures in a row: `first_s`, doubling, at most `max_s`."""

    first_s: float = 30.0
    max_s: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row."""
        return retry_delay(failures, self.first_s, self.max_s)


DEFAULT_BACKOFF = Backoff()


def priority(record: dict[str, Any]) -> tuple[int, str]:
    """Send order: marked and late clips first, then the oldest recording."""
    urgent = {"marked", "late_offload"} & set(record.get("flags") or [])
    return (0 if urgent else 1, record.get("recorded_start") or "")


def next_due(
    pending: dict[str, tuple[int, str]],
    now: float,
    retry_at: dict[str, float],
    busy: Container[str] = (),
) -> str | None:
    """The first pending clip in send order not waiting out a failure nor being sent (`busy`)."""
    ready = [(p, c) for c, p in pending.items() if retry_at.get(c, 0.0) <= now and c not in busy]
    return min(ready)[1] if ready else None


def idle_wait(
    pending: dict[str, tuple[int, str]], now: float, retry_at: dict[str, float], cap: float
) -> float:
    """Seconds to sleep when nothing is due: until the earliest retry, at most `cap`."""
    due = [retry_at[c] - now for c in pending if c in retry_at]
    return max(0.0, min([cap, *due]))
