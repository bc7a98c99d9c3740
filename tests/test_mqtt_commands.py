"""Remote commands against a real Mosquitto: replies, correlation data, errors, custody entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.mqtt.commands import MAX_PAYLOAD, CommandServer
from agent.mqtt.connection import MqttConnection
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.fakes import MemoryCustody
from tests.mqtt_helpers import FAST_BACKOFF, Recorder, section

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
ROOT = "dock/dock-c"
CLIP = "a" * 64


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def served(broker: Broker) -> Iterator[tuple[MemoryCustody, list[dict[str, Any]], Recorder]]:
    custody = MemoryCustody()
    calls: list[dict[str, Any]] = []

    def hold(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(payload)
        return {"clip_id": payload["clip_id"], "held": not payload.get("release", False)}

    def resync(payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(f"no clip {payload['clip_id'][:8]}")

    conn = MqttConnection(section(broker), "dock-c", backoff=FAST_BACKOFF)
    server = CommandServer(conn, ROOT, {"hold": hold, "resync": resync}, custody)
    server.start()
    conn.start()
    assert conn.wait_connected(5)
    it = Recorder(broker, "it-c", "it/replies/#", f"{ROOT}/cmd/+/reply")
    yield custody, calls, it
    it.close()
    server.stop()
    conn.stop()


def send(
    it: Recorder, name: str, payload: bytes, corr: bytes | None = b"c-1", by: str = ""
) -> None:
    props = Properties(PacketTypes.PUBLISH)
    if corr is not None:
        props.ResponseTopic = "it/replies/console"
        props.CorrelationData = corr
    if by:
        props.UserProperty = ("by", by)
    it.client.publish(f"{ROOT}/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)


def test_ping_replies_on_response_topic_with_correlation(served: Any) -> None:
    custody, _calls, it = served
    send(it, "ping", b"", corr=b"\x00corr-42")
    msg = it.next()
    assert msg.topic == "it/replies/console"
    assert msg.properties.CorrelationData == b"\x00corr-42"
    reply = json.loads(msg.payload)
    assert reply["ok"] is True and reply["result"]["pong"] is True
    assert reply["result"]["version"] and reply["result"]["ts"]
    assert custody.entries == []  # pings are not evidence


def test_without_response_topic_reply_goes_to_default(served: Any) -> None:
    _custody, _calls, it = served
    send(it, "ping", b"{}", corr=None)
    msg = it.next()
    assert msg.topic == f"{ROOT}/cmd/ping/reply" and json.loads(msg.payload)["ok"] is True


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
    assert entry["event"] == "command" and entry["name"] == "hold" and entry["by"] == "sgt.li"
    assert entry["payload"] == {"clip_id": CLIP, "reason": "case 17"}


def test_handler_exception_is_an_error_reply_and_still_recorded(served: Any) -> None:
    custody, _calls, it = served
    send(it, "resync", json.dumps({"clip_id": CLIP}).encode())
    reply = json.loads(it.next().payload)
    assert reply["ok"] is False and "resync failed: no clip aaaaaaaa" in reply["error"]
    assert custody.entries[0]["by"] == "it/replies/console"  # no "by": the response topic
