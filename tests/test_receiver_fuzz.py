"""Fuzzing the receiver's message handling (hypothesis, bounded to a few seconds).

Arbitrary topics, payloads and MQTT properties go through the receiver's own entry points
(`_dispatch`, the network thread's, then `_handle`, the worker's) exactly as paho would hand
them over. Nothing may escape as an exception, no worker may be marked failed, nothing
unverified may be stored, and a genuine transfer among the noise still arrives byte-exact.
Fuzz longer with DOCK_AGENT_FUZZ_EXAMPLES=20000.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.signing import Signer
from agent.trust import keys
from tests.transfer_kit import files_under

DOCK = "dock-a"
KEY = Ed25519PrivateKey.generate()
EXAMPLES = int(os.environ.get("DOCK_AGENT_FUZZ_EXAMPLES", "300"))  # a few seconds in the suite
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Recording(Receiver):
    """The receiver with its answers kept instead of published (no broker: the edge is MQTT)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, p.Response]] = []

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        self.sent.append((topic, resp))


@pytest.fixture
def rx(tmp_path: Path) -> Iterator[Recording]:
    """One receiver (keys on, dock-a enrolled) for all the examples of a test."""
    root = tmp_path
    (root / "keys").mkdir()
    keys.write_public(root / "keys" / f"{DOCK}.pub", KEY.public_key(), DOCK)
    receiver = Recording(
        root / "store", MqttSection(port=1), dock_keys_dir=root / "keys", unidentified="store"
    )
    (root / "store").mkdir()
    yield receiver
    for store in receiver._stores:
        store.close()


def message(topic: bytes, payload: bytes, props: Properties | None) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=1, topic=topic)
    msg.payload = payload
    msg.properties = props  # type: ignore[assignment]
    return msg


def deliver(rx: Recording, msg: mqtt.MQTTMessage) -> p.Response | None:
    """One message as paho delivers it, then every queued job as the workers would run it."""
    before = len(rx.sent)
    rx._on_command(msg)
    for i, q in enumerate(rx._queues):
        while not q.empty():
            job = q.get_nowait()
            assert job is not None
            rx._handle(rx._stores[i], *job)
    assert not rx.failed.is_set(), rx.failure
    return rx.sent[-1][1] if len(rx.sent) > before else None


def props_of(reply_to: str | None, user: list[tuple[str, str]], corr: bytes | None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if reply_to is not None:
        props.ResponseTopic = reply_to
    if corr is not None:
        props.CorrelationData = corr
    if user:
        props.UserProperty = user
    return props


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
hexish = st.one_of(st.text("0123456789abcdef", max_size=130), st.text(max_size=10))
sig_values = st.one_of(json_values, hexish, st.just("é"), st.just("0" * 128))
checksums = st.one_of(st.just("a" * 64), st.just(""), hexish, json_values)
init_payloads = st.builds(
    lambda name, size, checksum, user, extra: json.dumps(
        {"name": name, "size": size, "checksum": checksum, "user_data": user, **extra},
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass"),
    st.one_of(st.just("clip.MP4"), json_values),
    st.one_of(st.integers(0, 10**6), st.integers(-1, 10**30), json_values),
    checksums,
    st.one_of(json_values, st.fixed_dictionaries({"dock_sig": sig_values})),
    st.dictionaries(st.sampled_from(["expire_at", "segments_ttl", "x"]), json_values, max_size=2),
)
file_ids = st.one_of(st.just("a" * 64), hexish, st.text(max_size=300))
tails = st.one_of(
    st.just("init"),
    st.just("abort"),
    st.builds(lambda n, h: f"fin/{n}/{h}", st.integers(-5, 10**25), hexish),
    st.builds(lambda n: f"fin/{n}", st.integers(0, 10**6)),
    st.builds(lambda n, h: f"{n}/{h}", st.integers(-5, 10**25), hexish),
    st.text(max_size=40),
)
topics = st.one_of(
    st.builds(
        lambda pre, fid, tail: f"{pre}/{fid}/{tail}".encode("utf-8", "surrogatepass"),
        st.sampled_from(["$file", "$file-async", "$filex", "x"]),
        file_ids,
        tails,
    ),
    st.binary(max_size=80),
)
payloads = st.one_of(
    init_payloads, st.binary(max_size=600), json_values.map(lambda v: json.dumps(v).encode())
)
reply_tos = st.one_of(
    st.none(),
    st.just(p.response_topic(DOCK)),
    st.just(p.response_topic("dock-b")),
    st.text(max_size=30).map(p.response_topic),
    st.text(max_size=30),
)
user_props = st.lists(
    st.tuples(st.sampled_from(["dock_sig", "x", ""]), st.one_of(hexish, st.just("é"))), max_size=3
)


@FUZZ
@given(topics, payloads, reply_tos, user_props, st.one_of(st.none(), st.binary(max_size=20)))
def test_no_message_escapes_as_an_exception_nor_stores_anything(
    rx: Recording, topic: bytes, payload: bytes, reply_to: str | None, user: Any, corr: Any
) -> None:
    resp = deliver(rx, message(topic, payload, props_of(reply_to, user, corr)))
    if resp is not None and resp.ok:  # only what any EMQX client may do unsigned: abort, a no-op
        assert resp.topic.endswith("/abort"), resp
    assert files_under(rx.store_dir) == []


@FUZZ
@given(st.sampled_from(["$file", "$file-async"]), init_payloads, st.sampled_from([DOCK, "dock-b"]))
def test_hostile_init_fields_in_a_known_docks_name_are_refusals(
    rx: Recording, prefix: str, payload: bytes, client: str
) -> None:
    """Well-formed enough to reach the signature check, hostile in every field."""
    topic = f"{prefix}/{'a' * 64}/init".encode()
    resp = deliver(rx, message(topic, payload, props_of(p.response_topic(client), [], b"c")))
    assert resp is not None and not resp.ok
    assert files_under(rx.store_dir) == []


@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))
@given(
    st.binary(min_size=1, max_size=3000),
    st.lists(
        st.tuples(st.integers(0, 3100), st.binary(max_size=700), reply_tos, user_props), max_size=6
    ),
)
def test_a_signed_transfer_arrives_byte_exact_among_hostile_segments(
    rx: Recording, data: bytes, noise: list[tuple[int, bytes, Any, Any]]
) -> None:
    fid = p.sha256_hex(data)
    signer = Signer(DOCK, KEY)
    reply = p.response_topic(DOCK)
    meta = signer.sign_meta(fid, p.FileMeta("clip.MP4", len(data), fid))
    init = message(
        p.init_topic("$file", fid).encode(), p.init_payload(meta), props_of(reply, [], b"i")
    )
    assert deliver(rx, init).ok  # type: ignore[union-attr]
    half = len(data) // 2
    pieces = [(0, data[:half]), (half, data[half:])] if half else [(0, data)]
    for offset, junk, reply_to, user in noise:  # the attacker first, on every range
        topic = p.segment_topic("$file", fid, offset, p.sha256_hex(junk)).encode()
        deliver(rx, message(topic, junk, props_of(reply_to, user, b"n")))
    for offset, piece in pieces:
        sig = signer.segment_property(fid, offset, piece)
        topic = p.segment_topic("$file", fid, offset, p.sha256_hex(piece)).encode()
        assert deliver(rx, message(topic, piece, props_of(reply, [sig], b"s"))).ok  # type: ignore[union-attr]
    for store in rx._stores:
        store.commit()
    fin_payload, _nonce = signer.fin_payload()
    fin = message(
        p.fin_topic("$file", fid, len(data), fid).encode(), fin_payload, props_of(reply, [], b"f")
    )
    answer = deliver(rx, fin)
    assert answer is not None and answer.ok and answer.receipt, answer
    assert (rx.store_dir / DOCK / fid / "clip.MP4").read_bytes() == data
