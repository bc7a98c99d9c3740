"""Remote commands against a real Mosquitto: replies, correlation data, errors, custody entries,
refusals before anything is written, the rate limit and the bounded queue."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.daemon.remote import DockFacts, hold_handler, note_handler
from agent.evidence.retention.holds import set_hold
from agent.mqtt.command_policy import ClipFacts
from agent.mqtt.commands import MAX_PAYLOAD, CommandServer, Custody, Handler
from agent.mqtt.connection import MqttConnection
from agent.notes.store import NotesStore
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.fakes import MemoryCustody
from tests.mqtt_helpers import FAST_BACKOFF, Recorder, section, wait_for
from tests.test_export import open_dock

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
ROOT = "dock/dock-c"
CLIP = "a" * 64


class Known:
    """What the test dock holds: the clips in `clips` (local copies present), no notes."""

    def __init__(self, *clips: str) -> None:
        self.clips = set(clips)

    def note_exists(self, note_id: str) -> bool:
        return False

    def clip(self, clip_id: str) -> ClipFacts | None:
        return ClipFacts("synced", True) if clip_id in self.clips else None

    def resync_room(self, clip_id: str) -> bool:
        return True


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@contextmanager
def serving(
    broker: Broker,
    handlers: dict[str, Handler],
    custody: Custody,
    known: Any,
    **kw: Any,
) -> Iterator[tuple[CommandServer, Recorder]]:
    """A dock serving commands on `broker`, and an IT client listening for the replies."""
    conn = MqttConnection(section(broker), "dock-c", backoff=FAST_BACKOFF)
    server = CommandServer(conn, ROOT, handlers, custody, known, **kw)
    server.start()
    conn.start()
    assert conn.wait_connected(5)
    assert conn.wait_subscribed(f"{ROOT}/cmd/+", 5), "the dock's command subscription"
    it = Recorder(broker, "it-c", f"{ROOT}/cmd/+/reply")
    try:
        yield server, it
    finally:
        it.close()
        server.stop()
        conn.stop()


@pytest.fixture
def served(broker: Broker) -> Iterator[tuple[MemoryCustody, list[dict[str, Any]], Recorder]]:
    custody = MemoryCustody()
    calls: list[dict[str, Any]] = []

    def hold(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(payload)
        return {"clip_id": payload["clip_id"], "held": not payload.get("release", False)}

    def resync(payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(f"no clip {payload['clip_id'][:8]}")

    with serving(broker, {"hold": hold, "resync": resync}, custody, Known(CLIP)) as (_s, it):
        yield custody, calls, it


def send(
    it: Recorder,
    name: str,
    payload: bytes,
    corr: bytes | None = b"c-1",
    by: str = "",
    response_topic: str = "",
) -> None:
    props = Properties(PacketTypes.PUBLISH)
    if corr is not None:
        props.CorrelationData = corr
    if response_topic:
        props.ResponseTopic = response_topic
    if by:
        props.UserProperty = ("by", by)
    it.client.publish(f"{ROOT}/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)


def test_ping_replies_on_the_reply_topic_with_correlation(served: Any) -> None:
    custody, _calls, it = served
    send(it, "ping", b"", corr=b"\x00corr-42")
    msg = it.next()
    assert msg.topic == f"{ROOT}/cmd/ping/reply"
    assert msg.properties.CorrelationData == b"\x00corr-42"
    reply = json.loads(msg.payload)
    assert reply["ok"] is True and reply["result"]["pong"] is True
    assert reply["result"]["version"] and reply["result"]["ts"]
    assert custody.entries == []  # pings are not evidence


def test_without_correlation_data_the_reply_still_comes(served: Any) -> None:
    _custody, _calls, it = served
    send(it, "ping", b"{}", corr=None)
    msg = it.next()
    assert msg.topic == f"{ROOT}/cmd/ping/reply" and json.loads(msg.payload)["ok"] is True


def test_a_response_topic_elsewhere_is_ignored(broker: Broker) -> None:
    custody = MemoryCustody()
    with (
        serving(broker, {}, custody, Known(CLIP)) as (_server, it),
        closing(Recorder(broker, "attacker", "attacker/#")) as attacker,
    ):
        for i, topic in enumerate(["attacker/inbox", f"{ROOT}/status"]):
            send(it, "ping", b"", corr=b"%d" % i, by="attacker", response_topic=topic)
            reply = it.next()
            assert reply.topic == f"{ROOT}/cmd/ping/reply"
            assert reply.properties.CorrelationData == b"%d" % i
        send(it, "frobnicate", b"{}", corr=b"err", response_topic="attacker/inbox")
        assert json.loads(it.next().payload)["ok"] is False
        assert attacker.drain(0.5) == [], "nothing went to the topic the sender named"


@pytest.mark.parametrize(
    ("name", "payload", "words"),
    [
        ("ping", b"{not json", "not UTF-8 JSON"),
        ("hold", b"[1, 2]", "JSON object"),
        ("selfdestruct", b"{}", "unknown command"),
        ("hold", json.dumps({"clip_id": CLIP}).encode(), "missing field 'reason'"),
        ("hold", json.dumps({"clip_id": CLIP, "reason": "x", "release": "yes"}).encode(), "bool"),
        ("hold", json.dumps({"clip_id": "../etc", "reason": "x"}).encode(), "SHA-256"),
        ("hold", json.dumps({"clip_id": CLIP, "reason": "x", "relase": True}).encode(), "relase"),
        (
            "note",
            json.dumps({"note_id": "n1", "author": "a", "text": "t"}).encode(),
            "not available",
        ),
        ("ping", b" " + b"x" * MAX_PAYLOAD, "exceeds the limit"),
        ("ping", b"[" * 5000, "not UTF-8 JSON"),
        ("hold", json.dumps({"clip_id": CLIP, "reason": "x", "release": True}).encode(), "MQTT"),
        ("hold", json.dumps({"clip_id": "b" * 64, "reason": "x"}).encode(), "no clip bbbb"),
        ("resync", json.dumps({"clip_id": "b" * 64}).encode(), "no clip bbbb"),
    ],
)
def test_bad_commands_get_error_replies(served: Any, name: str, payload: bytes, words: str) -> None:
    custody, calls, it = served
    send(it, name, payload)
    reply = json.loads(it.next().payload)
    assert reply["ok"] is False and words in reply["error"]
    assert custody.entries == [] and calls == []
    send(it, "ping", b"")  # the dock still answers afterwards
    assert json.loads(it.next().payload)["ok"] is True


def test_accepted_command_is_in_custody_log(served: Any) -> None:
    custody, calls, it = served
    send(it, "hold", json.dumps({"clip_id": CLIP, "reason": "case 17"}).encode(), by="sgt.li")
    reply = json.loads(it.next().payload)
    assert reply == {"ok": True, "result": {"clip_id": CLIP, "held": True}}
    assert calls == [{"clip_id": CLIP, "reason": "case 17"}]
    (entry,) = custody.entries
    assert entry["event"] == "command" and entry["name"] == "hold"
    assert entry["claimed_by"] == "sgt.li" and "by" not in entry  # a claim, not an identity
    assert entry["payload"] == {"clip_id": CLIP, "reason": "case 17"}


@pytest.mark.logs_exception(reason="a handler's unexpected exception is logged with its traceback")
def test_handler_exception_is_an_error_reply_and_still_recorded(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    custody, _calls, it = served
    send(it, "resync", json.dumps({"clip_id": CLIP}).encode())
    reply = json.loads(it.next().payload)
    assert reply["ok"] is False and "resync failed: no clip aaaaaaaa" in reply["error"]
    (logged,) = [r for r in caplog.records if r.exc_info]
    assert logged.getMessage() == "command resync failed" and logged.exc_info
    assert logged.exc_info[0] is LookupError
    assert custody.entries[0]["claimed_by"] is None  # no "by" claimed


def replies(it: Recorder, count: int, timeout: float = 10.0) -> dict[bytes, dict[str, Any]]:
    """The next `count` replies by correlation data."""
    out = {}
    for _ in range(count):
        msg = it.next(timeout)
        out[bytes(msg.properties.CorrelationData)] = json.loads(msg.payload)
    return out


def test_commands_for_a_missing_note_leave_the_custody_log_byte_identical(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dock = open_dock(tmp_path)
    notes = NotesStore(dock.cfg.data_dir, dock.custody)
    dock.clip("A.MP4", b"evidence" * 100)
    log = dock.cfg.data_dir / "custody.jsonl"
    before = log.read_bytes()
    handlers = {"note": note_handler(notes)}
    known = DockFacts(notes, dock.index)
    with serving(broker, handlers, dock.custody, known, rate_per_min=1000, queue_bound=256) as (
        _server,
        it,
    ):
        for i in range(200):
            text = f"{i} " + "x" * 60_000  # 200 x 60 kB: the log would grow by 12 MB
            payload = json.dumps({"note_id": "n-404", "author": "it", "text": text}).encode()
            send(it, "note", payload, corr=b"%d" % i)
        got = replies(it, 200)
    assert set(got) == {b"%d" % i for i in range(200)}
    assert all(
        r == {"ok": False, "error": "note: no note 'n-404' on this dock"} for r in got.values()
    )
    assert log.read_bytes() == before
    assert not [r for r in caplog.records if r.exc_info], "a refusal logged a traceback"
    dock.custody.close()
    dock.index.close()


def test_hold_release_over_mqtt_is_refused(broker: Broker, tmp_path: Path) -> None:
    dock = open_dock(tmp_path)
    clip_id = dock.clip("A.MP4", b"evidence" * 100)["clip_id"]
    set_hold(dock.index, dock.custody, clip_id, "complaint 17", False, "cli:sgt")
    log = dock.cfg.data_dir / "custody.jsonl"
    before = log.read_bytes()
    handlers = {"hold": hold_handler(dock.index, dock.custody)}
    known = DockFacts(NotesStore(dock.cfg.data_dir, dock.custody), dock.index)
    with serving(broker, handlers, dock.custody, known) as (_server, it):
        release = {"clip_id": clip_id, "reason": "closed", "release": True}
        send(it, "hold", json.dumps(release).encode(), corr=b"release")
        refused = json.loads(it.next().payload)
        assert refused["ok"] is False and "dock-agent hold CLIP_ID --release" in refused["error"]
        assert log.read_bytes() == before
        assert dock.index.get(clip_id)["held"] is True
        hold = {"clip_id": clip_id, "reason": "complaint 18"}  # holding over MQTT still works
        send(it, "hold", json.dumps(hold).encode(), corr=b"hold")
        assert json.loads(it.next().payload)["result"]["held"] is True
    assert [e["event"] for e in dock.entries()][-2:] == ["command", "hold"]
    dock.custody.close()
    dock.index.close()


def test_a_flood_is_bounded_and_ping_is_answered_promptly_afterwards(broker: Broker) -> None:
    clips = [f"{i:064x}" for i in range(1000)]
    done: list[str] = []

    def resync(payload: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.02)  # a real resync looks the clip up and wakes the sync worker
        done.append(payload["clip_id"])
        return {"queued": payload["clip_id"]}

    custody = MemoryCustody()
    known = Known(*clips)
    with serving(broker, {"resync": resync}, custody, known, queue_bound=16) as (server, it):
        started = time.monotonic()
        for i, clip in enumerate(clips):
            name, payload = ("resync", json.dumps({"clip_id": clip}).encode())
            if i % 5 == 3:
                payload = b"{]"
            elif i % 5 == 4:
                name, payload = ("nonsense", b"{}")
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = b"%d" % i
            info = it.client.publish(f"{ROOT}/cmd/{name}", payload, qos=1, properties=props)
        info.wait_for_publish(10)
        wait_for(lambda: len(server.queue) == 0, 10, "the queue to drain")
        elapsed = time.monotonic() - started
        assert server.queue.peak == server.queue.bound  # the flood filled the queue, no more
        flood = it.drain(0.5)
        time.sleep(max(0.0, started + elapsed + 1.1 - time.monotonic()))  # 1 a second at 60/min
        asked = time.monotonic()
        send(it, "ping", b"", corr=b"ping")
        pong = it.next(2.0)
        took = time.monotonic() - asked
    assert pong.properties.CorrelationData == b"ping" and json.loads(pong.payload)["ok"] is True
    assert took < 2.0
    assert len(flood) <= 2 * 60 + 2 * elapsed + 2  # accepted + refused unread, each <= the rate
    assert len(custody.entries) == len(done) <= 60 + elapsed + 1
    errors = [json.loads(m.payload).get("error", "") for m in flood]
    assert any(e.startswith("rate limited") for e in errors)
    assert any(e.startswith("busy") for e in errors)
    assert any(e.startswith("unknown command 'nonsense'") for e in errors)
    assert any(e.startswith("payload is not UTF-8 JSON") for e in errors)


def test_a_duplicate_while_queued_runs_once_and_both_senders_get_the_reply(
    broker: Broker,
) -> None:
    first, second = "1" * 64, "2" * 64
    gate, busy = threading.Event(), threading.Event()
    ran: list[str] = []

    def resync(payload: dict[str, Any]) -> dict[str, Any]:
        ran.append(payload["clip_id"])
        busy.set()
        gate.wait(5)
        return {"queued": payload["clip_id"]}

    custody = MemoryCustody()
    with serving(broker, {"resync": resync}, custody, Known(first, second)) as (server, it):
        send(it, "resync", json.dumps({"clip_id": first}).encode(), corr=b"a")
        assert busy.wait(5)
        for corr in (b"b1", b"b2"):
            send(it, "resync", json.dumps({"clip_id": second}).encode(), corr=corr)
        wait_for(lambda: server.queue.waiting() == 2, 5, "the duplicate to join")
        assert len(server.queue) == 1
        gate.set()
        got = replies(it, 3)
    assert ran == [first, second]
    assert got[b"b1"] == got[b"b2"] == {"ok": True, "result": {"queued": second}}
    assert len(custody.entries) == 2


def test_over_rate_commands_get_rate_limited_replies_and_the_replies_are_bounded(
    broker: Broker,
) -> None:
    custody = MemoryCustody()
    with serving(broker, {}, custody, Known(), rate_per_min=5) as (_server, it):
        for i in range(20):
            send(it, "ping", b"", corr=b"%d" % i)
        got = {bytes(m.properties.CorrelationData): json.loads(m.payload) for m in it.drain(1.0)}
    assert [r["ok"] for r in got.values()].count(True) == 5
    limited = [r["error"] for r in got.values() if not r["ok"]]
    assert len(limited) == 5 and all(e.startswith("rate limited: more than 5") for e in limited)
    assert len(got) == 10  # the other 10 are dropped: a flood gets no flood of replies


def test_a_handlers_own_check_refuses_before_anything_is_logged(broker: Broker) -> None:
    ran: list[dict[str, Any]] = []

    def assign(payload: dict[str, Any]) -> dict[str, Any]:
        ran.append(payload)
        return {"bay": payload["bay"]}

    def check(payload: dict[str, Any]) -> None:
        if payload["bay"] != 1:
            raise ValueError(f"no bay {payload['bay']}")

    assign.check = check  # type: ignore[attr-defined]
    custody = MemoryCustody()
    with serving(broker, {"assign": assign}, custody, Known()) as (_server, it):
        send(it, "assign", json.dumps({"bay": 7, "officer": "012345"}).encode(), corr=b"7")
        assert json.loads(it.next().payload) == {"ok": False, "error": "assign: no bay 7"}
        assert custody.entries == [] and ran == []
        send(it, "assign", json.dumps({"bay": 1, "officer": "012345"}).encode(), corr=b"1")
        assert json.loads(it.next().payload) == {"ok": True, "result": {"bay": 1}}
    assert [e["name"] for e in custody.entries] == ["assign"]
