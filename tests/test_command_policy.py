"""Remote-command policy without a broker: form, what exists, the rate limit, the bounded queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.mqtt.command_policy import (
    MAX_BY,
    RELEASE_REFUSED,
    ClipFacts,
    CommandError,
    decide,
)
from agent.mqtt.command_queue import CommandQueue, RateLimit

CLIP = "a" * 64
PURGED = "b" * 64


class World:
    """What exists: one note, one clip with its local copy, one purged clip."""

    def __init__(self, resync_room: bool = True) -> None:
        self.notes = {"n-1"}
        self.clips = {CLIP: ClipFacts("synced", True), PURGED: ClipFacts("purged", False)}
        self.room = resync_room

    def note_exists(self, note_id: str) -> bool:
        return note_id in self.notes

    def clip(self, clip_id: str) -> ClipFacts | None:
        return self.clips.get(clip_id)

    def resync_room(self, clip_id: str) -> bool:
        return self.room


def raw(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("name", "payload", "words"),
    [
        ("note", raw(note_id="n-404", author="it", text="why"), "no note 'n-404'"),
        ("resync", raw(clip_id="c" * 64), f"no clip {'c' * 64}"),
        ("hold", raw(clip_id="c" * 64, reason="case 1"), f"no clip {'c' * 64}"),
        ("hold", raw(clip_id=PURGED, reason="case 1"), "already purged"),
        ("resync", raw(clip_id=PURGED), "already purged"),
        ("hold", raw(clip_id=CLIP, reason="case 1", release=True), "not accepted over MQTT"),
        ("hold", raw(clip_id=CLIP, reason=" "), "'reason' must not be empty"),
        ("hold", raw(clip_id=CLIP, reason="x" * 2001), "longer than 2000"),
        ("note", raw(note_id="n-1", author="it", text=7), "'text' must be str"),
        ("note", raw(note_id="n-1", author=True, text="t"), "'author' must be str"),
        ("ping", b"[" * 5000, "not UTF-8 JSON"),
        ("ping", b'{"a": "\xff"}', "not UTF-8 JSON"),
        ("ping", raw(extra=1), "unexpected field(s) extra"),
        ("x" * 500, b"{}", "unknown command 'xxxx"),
        ("assign", raw(bay=True, officer="012345"), "'bay' must be int"),
        ("assign", raw(bay=1, officer="0" * 129), "longer than 128"),
    ],
)
def test_impossible_or_malformed_commands_are_refused(
    name: str, payload: bytes, words: str
) -> None:
    with pytest.raises(CommandError) as err:
        decide(name, payload, "it", World())
    assert words in str(err.value)
    assert len(str(err.value)) < 300  # an error reply never echoes a flood back


def test_release_names_the_local_cli() -> None:
    with pytest.raises(CommandError, match="dock-agent hold CLIP_ID --release"):
        decide("hold", raw(clip_id=PURGED, reason="done", release=True), "it", World())
    assert "--release" in RELEASE_REFUSED


def test_possible_commands_are_accepted() -> None:
    cmd = decide("note", raw(note_id="n-1", author="it", text="why"), "sgt.li", World())
    assert (cmd.name, cmd.claimed_by, cmd.payload["note_id"]) == ("note", "sgt.li", "n-1")
    hold = decide("hold", raw(clip_id=CLIP, reason="case 1", release=False), None, World())
    assert hold.payload == {"clip_id": CLIP, "reason": "case 1", "release": False}
    assert decide("ping", b"", None, World()).payload == {}


def test_resync_refused_when_the_resync_queue_is_full() -> None:
    with pytest.raises(CommandError, match="too many clips are waiting"):
        decide("resync", raw(clip_id=CLIP), "it", World(resync_room=False))


def test_long_sender_name_refused() -> None:
    with pytest.raises(CommandError, match="'by'"):
        decide("ping", b"", "x" * (MAX_BY + 1), World())


def test_identical_commands_share_a_key_whatever_the_field_order() -> None:
    a = decide("hold", b'{"clip_id": "%s", "reason": "r"}' % CLIP.encode(), "x", World())
    b = decide("hold", b'{"reason": "r", "clip_id": "%s"}' % CLIP.encode(), "y", World())
    c = decide("hold", raw(clip_id=CLIP, reason="other"), "x", World())
    assert a.key == b.key != c.key


def test_rate_limit_bursts_then_refills() -> None:
    now = [0.0]
    rate = RateLimit(60, clock=lambda: now[0])
    assert all(rate.take() == 0.0 for _ in range(60))
    wait = rate.take()
    assert 0.9 < wait <= 1.0  # one command a second at 60 a minute
    now[0] += 1.0
    assert rate.take() == 0.0 and rate.take() > 0
    now[0] += 3600
    assert sum(rate.take() == 0.0 for _ in range(100)) == 60  # the burst never exceeds the rate


def test_queue_is_bounded_and_coalesces_duplicates() -> None:
    q: CommandQueue[str, int] = CommandQueue(bound=3, max_waiters=2)
    assert q.put("a", "A", 1) == "queued"
    assert q.put("a", "A", 2) == "joined"
    assert q.put("a", "A", 3) == "full"  # no more waiters for one item
    assert [q.put(k, k, 0) for k in "bcd"] == ["queued", "queued", "full"]
    assert len(q) == 3 and q.peak == 3
    first = q.get(0)
    assert first is not None and (first.item, first.waiters) == ("A", [1, 2])
    assert q.put("a", "A", 4) == "queued"  # no longer queued: a new command
    q.close()
    assert q.put("e", "E", 0) == "full"
    assert [getattr(q.get(0), "item", None) for _ in range(4)] == ["b", "c", "A", None]
