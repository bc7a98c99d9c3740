"""An EMQX-behaving file-transfer service on a real Mosquitto, written from EMQX's source.

It subscribes to `$file/#` and `$file-async/#` and answers every command as EMQX 5.x does
(emqx/emqx apps/emqx_ft/src/emqx_ft.erl; sources per behaviour in tests/emqx/README.md): one
QoS 1 message to the command's Response Topic, else `$file-response/{clientid}`, copying the
Correlation Data, payload {"vsn": "0.1", "topic", "packet_id", "reason_code",
"reason_description"}, reason code 0x00 ("success") or 0x80 with EMQX's error name
(`filemeta_conflict`, `incomplete`, `checksum_mismatch`, `enospc`, `edquot`, `timeout`,
`invalid_filemeta`, ...). A fin whose whole-file checksum mismatches is 0x80 `internal_error`,
as in EMQX (its reason is a 3-tuple that emqx_ft_error:format/1 does not name).

Start it in a test (a `broker` from tests/broker.py):

    with EmqxFileTransfer(broker, tmp_path / "emqx", Options(time_scale=0.01)) as emqx:
        ...  # the dock sends; then emqx.wait_export("dock-1", file_id).path.read_bytes()

or load the ready fixture, `pytest_plugins = ["tests.emqx.fixture"]` (needs a `broker` fixture),
and set options per test: `@pytest.mark.parametrize("emqx_ft", [{"assembly_delay": 200,
"time_scale": 0.01}], indirect=True)`; `emqx_ft.options` may also be changed while running.

Options (times in EMQX seconds; `time_scale` = real seconds per EMQX second; it and the ttl
bounds are read at construction, the others whenever they apply):
  assembly_delay    how long a fin waits for assembly and export before its answer (0); an
                    `incomplete` or disk-error fin is answered at once, as EMQX finds it early
  assemble_timeout  EMQX's assemble_timeout: a fin not assembled by then gets `timeout` (300);
                    the assembly goes on, and a later fin gets success once it has exported
  min_segments_ttl, max_segments_ttl   EMQX's gc bounds (300, 86400): a transfer's fragments
                    (segments and filemeta) vanish `segments_ttl` after their last write,
                    clamped to the bounds, the max when the init gave none
  disk_error        None, "enospc" or "edquot": new filemetas, segments and fins get 0x80 that
  anonymous_client  client id for commands without a Response Topic (None: not acted on)
  max_packet_size   EMQX's default 1 MB: a larger command is recorded, never answered
                    (EMQX disconnects the client instead); None = no limit
  s3_metadata_limit bytes of S3 user metadata (EMQX's S3 exporter puts the filemeta, user_data
                    included, in a header; S3 allows 2048): more fails fin, 0x80 `internal_error`

How it knows the client: a subscriber on Mosquitto cannot see the publisher's client id, so the
client is the tail of a `$file-response/{clientid}` Response Topic, any other Response Topic
itself, else `anonymous_client`. `packet_id` is the id Mosquitto delivered the command with, not
the publisher's (also invisible). Not possible on Mosquitto: PUBACK reason codes (Mosquitto acks
every QoS 1 publish with 0 before the fixture sees it), so EMQX before 5.3.2, which answers only
by PUBACK (`ack_mode = "puback"`), cannot be imitated and is not.

Records (lists, append-only): `inits` (every init payload seen, InitSeen), `answers` (Answer),
`exports` (Export: the file at `{root}/exports/{client}/{file_id}/{name}`, ids escaped as
EMQX does, its sha256, filemeta, user_data, S3 headers), `unheard`
(commands not acted on); `conflicts` = the inits answered `filemeta_conflict`. Its own MQTT
client (`client_id`) ends its session on `stop()`, so no dead subscriber queues commands.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Broker
from tests.emqx.commands import (
    RESPONSE_PREFIX,
    Command,
    Refused,
    checksum_problem,
    escape_filename,
    is_file_command,
    packet_size,
    parse_command,
    response_payload,
    s3_headers,
)
from tests.emqx.records import Answer, Export, InitSeen, Unheard
from tests.emqx.segments import Key, SegmentStore


@dataclass
class Options:
    """How the fixture behaves (see the module docstring)."""

    time_scale: float = 1.0
    assembly_delay: float = 0.0
    assemble_timeout: float = 300.0
    min_segments_ttl: float = 300.0
    max_segments_ttl: float = 86400.0
    disk_error: str | None = None
    anonymous_client: str | None = None
    max_packet_size: int | None = 1_048_576
    s3_metadata_limit: int | None = None


@dataclass
class _Reply:
    """Where and how to answer one command."""

    client: str
    topic: str
    packet_id: int
    reply_to: str
    correlation: bytes | None
    answered: bool = False


@dataclass
class _Assembly:
    """A fin being assembled: its outcome is decided, its answer waits for `assembly_delay`."""

    key: Key
    data: bytes
    meta: dict[str, Any]
    reason: str | None
    waiters: list[_Reply] = field(default_factory=list)


class EmqxFileTransfer:
    """The broker side of EMQX file transfer, as a subscriber on a plain Mosquitto."""

    def __init__(self, broker: Broker, root: Path, options: Options | None = None) -> None:
        self.broker, self.root = broker, root
        self.options = options or Options()
        self._scale = self.options.time_scale
        self._skew = 0.0  # EMQX seconds added by advance()
        self.store = SegmentStore(
            self.clock, self.options.min_segments_ttl, self.options.max_segments_ttl
        )
        self.inits: list[InitSeen] = []
        self.answers: list[Answer] = []
        self.exports: list[Export] = []
        self.unheard: list[Unheard] = []
        self._assemblies: dict[Key, _Assembly] = {}
        self._exported: set[Key] = set()
        self._timers: list[threading.Timer] = []
        self._lock = threading.RLock()
        self._subscribed = threading.Event()
        self.client_id = f"emqx-ft-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> EmqxFileTransfer:
        """Connect, subscribe (SUBACKed) and serve."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # commands sent during a reconnect wait for it
        self.client.connect(self.broker.host, self.broker.port, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "EMQX fixture did not subscribe"
        return self

    def stop(self) -> None:
        """Stop serving; pending fins stay unanswered."""
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0  # else Mosquitto queues every later command for it
        self.client.disconnect(properties=props)
        self.client.loop_stop()

    def __enter__(self) -> EmqxFileTransfer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def clock(self) -> float:
        """Now, in EMQX seconds."""
        return time.monotonic() / self._scale + self._skew

    def advance(self, emqx_seconds: float) -> None:
        """Let `emqx_seconds` pass at once for the fragments' ages (their ttl): a test need not
        sleep them out. Fins already waiting (assembly_delay) keep their real-time timers."""
        with self._lock:
            self._skew += emqx_seconds

    # ---- what tests read --------------------------------------------------------------------

    @property
    def conflicts(self) -> list[InitSeen]:
        """Every init answered `filemeta_conflict`."""
        return [i for i in self.inits if i.reason == "filemeta_conflict"]

    def export(self, client: str, file_id: str) -> Export | None:
        """The latest export of a transfer, if any."""
        found = [e for e in self.exports if (e.client, e.file_id) == (client, file_id)]
        return found[-1] if found else None

    def wait_export(self, client: str, file_id: str, timeout: float = 10.0) -> Export:
        """The export of a transfer, waiting for it up to `timeout` real seconds."""
        deadline = time.monotonic() + timeout
        while (found := self.export(client, file_id)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no export of {client}/{file_id} in {timeout} s")
            time.sleep(0.02)
        return found

    def answers_to(self, command_topic: str) -> list[Answer]:
        """Every answer published for commands on exactly this topic."""
        return [a for a in self.answers if a.command_topic == command_topic]

    # ---- MQTT -------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([("$file/#", 1), ("$file-async/#", 1)])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not is_file_command(msg.topic):
            return
        payload = bytes(msg.payload)
        reply = self._reply_for(msg)
        if reply is None:
            return
        try:
            cmd = parse_command(msg.topic, payload)
        except Refused as refused:
            if msg.topic.endswith("/init"):
                self._record_init(reply, payload, None, refused.reason)
            self._answer(reply, refused.reason)
            return
        key = (reply.client, cmd.file_id)
        if cmd.kind == "init":
            with self._lock:
                reason = self.store.store_filemeta(key, cmd.meta, self.options.disk_error)
                self._record_init(reply, payload, cmd.meta, reason)
            self._answer(reply, reason)
        elif cmd.kind == "segment":
            with self._lock:
                reason = self.store.store_segment(key, cmd.offset, payload, self.options.disk_error)
            self._answer(reply, reason)
        elif cmd.kind == "abort":
            self._answer(reply, None)  # emqx_ft:on_abort/3 is a TODO that answers ok
        else:
            self._fin(reply, key, cmd)

    def _reply_for(self, msg: mqtt.MQTTMessage) -> _Reply | None:
        """How to answer `msg`, or None (recorded in `unheard`) when it cannot be."""
        props = msg.properties
        reply_to = getattr(props, "ResponseTopic", None) or None
        correlation = getattr(props, "CorrelationData", None)
        limit = self.options.max_packet_size
        if (
            limit is not None
            and packet_size(msg.topic, bytes(msg.payload), reply_to, correlation) > limit
        ):
            self._unheard(msg, "packet too large")
            return None
        if reply_to and reply_to.startswith(RESPONSE_PREFIX) and reply_to != RESPONSE_PREFIX:
            client = reply_to[len(RESPONSE_PREFIX) :]
        elif reply_to:
            client = reply_to
        elif self.options.anonymous_client is not None:
            client = self.options.anonymous_client
            reply_to = RESPONSE_PREFIX + client
        else:
            self._unheard(msg, "no response topic")
            return None
        return _Reply(client, msg.topic, msg.mid, reply_to, correlation)

    def _unheard(self, msg: mqtt.MQTTMessage, why: str) -> None:
        with self._lock:
            self.unheard.append(Unheard(msg.topic, len(msg.payload), why, time.monotonic()))

    def _record_init(
        self, reply: _Reply, payload: bytes, meta: dict[str, Any] | None, reason: str | None
    ) -> None:
        file_id = reply.topic.split("/")[1]
        seen = InitSeen(reply.client, file_id, reply.topic, payload, meta, reason, time.monotonic())
        with self._lock:
            self.inits.append(seen)

    def _answer(self, reply: _Reply, reason: str | None) -> None:
        """Publish EMQX's response to one command, once."""
        with self._lock:
            if reply.answered:
                return
            reply.answered = True
            answer = Answer(
                reply.client,
                reply.topic,
                reply.reply_to,
                reply.correlation,
                reason,
                time.monotonic(),
            )
            self.answers.append(answer)
        props = Properties(PacketTypes.PUBLISH)
        if reply.correlation is not None:
            props.CorrelationData = reply.correlation
        payload = response_payload(reply.topic, reply.packet_id, reason)
        self.client.publish(reply.reply_to, payload, qos=1, properties=props)

    # ---- fin: assembly, delay, timeout --------------------------------------------------------

    def _fin(self, reply: _Reply, key: Key, cmd: Command) -> None:
        """Answer a fin as emqx_ft:on_fin/5 and emqx_ft_storage_fs:assemble/4 do."""
        with self._lock:
            running = self._assemblies.get(key)
            if running is not None:  # a fin resent during assembly waits for the same one
                running.waiters.append(reply)
                self._later(self.options.assemble_timeout, self._answer, reply, "timeout")
                return
            if key in self._exported:  # check_if_already_exported/2
                self._answer(reply, None)
                return
            parts = self.store.coverage(key, cmd.size)
            meta = self.store.filemeta(key)
            if parts is None or meta is None:
                self._answer(reply, "incomplete")
                return
            data = b"".join(parts)
            early = self.options.disk_error or self._s3_refusal(key, meta)
            if early:
                self._answer(reply, early)
                return
            job = _Assembly(key, data, meta, checksum_problem(cmd, meta, data), [reply])
            self._assemblies[key] = job
            self._later(self.options.assemble_timeout, self._answer, reply, "timeout")
            self._later(self.options.assembly_delay, self._finish, job)

    def _finish(self, job: _Assembly) -> None:
        with self._lock:
            if job.reason is None:
                self._export(job)
            del self._assemblies[job.key]
            waiters = list(job.waiters)
        for reply in waiters:
            self._answer(reply, job.reason)

    def _later(self, emqx_seconds: float, fn: Any, *args: Any) -> None:
        if emqx_seconds <= 0:
            fn(*args)
            return
        timer = threading.Timer(emqx_seconds * self._scale, fn, args)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _s3_refusal(self, key: Key, meta: dict[str, Any]) -> str | None:
        limit = self.options.s3_metadata_limit
        headers = s3_headers(key, meta)
        too_big = sum(len(k.encode()) + len(v.encode()) for k, v in headers.items())
        return "internal_error" if limit is not None and too_big > limit else None

    def _export(self, job: _Assembly) -> None:
        """Write the assembled file atomically and record it; the fragments are collected."""
        client, file_id = job.key
        folder = self.root / "exports" / escape_filename(client) / escape_filename(file_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / job.meta["name"]
        tmp = folder / f".{job.meta['name']}.{uuid.uuid4().hex[:6]}.tmp"
        with open(tmp, "wb") as f:
            f.write(job.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.exports.append(
            Export(
                client,
                file_id,
                job.meta["name"],
                path,
                len(job.data),
                hashlib.sha256(job.data).hexdigest(),
                job.meta,
                s3_headers(job.key, job.meta),
                time.monotonic(),
            )
        )
        self._exported.add(job.key)
        self.store.forget(job.key)


@pytest.fixture
def emqx_ft(
    broker: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[EmqxFileTransfer]:
    """A started EmqxFileTransfer on the test's `broker`; options from indirect parametrize."""
    options = Options(**getattr(request, "param", {}))
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as service:
        yield service
