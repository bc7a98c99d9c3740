"""Remote commands on R/cmd/{name} (SPEC 6): validate, record in the custody log, run, reply.

Commands and their JSON object payloads (no other fields are accepted):

- `note`   {"note_id": str, "author": str, "text": str}: append an explanation to a note;
- `resync` {"clip_id": sha256-hex}: send a clip upstream again;
- `hold`   {"clip_id": sha256-hex, "reason": str, "release": bool (default false)};
- `assign` {"bay": int, "officer": str, "name": str, "unit": str}: bind the zfy recorder in a
  bay to an officer (agent/dock/assign.py; name and unit optional);
- `ping`   {} (or an empty payload): answered here with {"pong": true, "ts", "version"}.

A handler with a `check(payload)` method has it called before anything is logged; a
ValueError from it refuses the command.

The reply goes to the MQTT v5 Response Topic with the request's Correlation Data, else to
R/cmd/{name}/reply: {"ok": true, "result": {...}} or {"ok": false, "error": "..."}. A command
is ACCEPTED once it is well-formed and this dock has a handler for it; it is then written to
the custody log (`command`, name, by, payload) BEFORE it runs, and not run when that write
fails. `by` is the v5 user property "by", else the response topic. `ping` is exempt from the
custody log by default (monitoring pings would flood an fsync-per-entry evidence log).
Retained messages are ignored: a retained command would run again on every resubscribe.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import __version__
from agent.daemon.events import now_iso
from agent.mqtt.connection import MqttConnection

logger = logging.getLogger(__name__)

MAX_PAYLOAD = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]
SHA256_RE = re.compile(r"[0-9a-f]{64}")

# name -> field -> (type, required)
SCHEMAS: dict[str, dict[str, tuple[type, bool]]] = {
    "note": {"note_id": (str, True), "author": (str, True), "text": (str, True)},
    "resync": {"clip_id": (str, True)},
    "hold": {"clip_id": (str, True), "reason": (str, True), "release": (bool, False)},
    "assign": {
        "bay": (int, True),
        "officer": (str, True),
        "name": (str, False),
        "unit": (str, False),
    },
    "ping": {},
}


class Custody(Protocol):
    """What commands need of the custody log."""

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one entry (fsync'd) and return it."""
        ...


class CommandError(Exception):
    """A command refused, with the message its sender reads."""


def parse_payload(raw: bytes) -> dict[str, Any]:
    """The command's JSON object, or CommandError saying what is wrong."""
    if len(raw) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(raw)} bytes exceeds the limit of {MAX_PAYLOAD}")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
    return data


def validate(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Check `payload` against the command's fields; return it or raise CommandError."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(sorted(SCHEMAS))}")
    unknown = sorted(set(payload) - set(schema))
    if unknown:
        raise CommandError(f"{name}: unexpected field(s) {', '.join(unknown)}")
    for key, (kind, required) in schema.items():
        if key not in payload:
            if required:
                raise CommandError(f"{name}: missing field {key!r} ({kind.__name__})")
            continue
        value = payload[key]
        if not isinstance(value, kind):
            raise CommandError(f"{name}: field {key!r} must be {kind.__name__}, not {value!r:.40}")
        if isinstance(value, str) and not value.strip():
            raise CommandError(f"{name}: field {key!r} must not be empty")
    if "clip_id" in payload and not SHA256_RE.fullmatch(payload["clip_id"]):
        raise CommandError(f"{name}: clip_id must be the clip's SHA-256 (64 lowercase hex)")
    return payload


def _check(name: str, handler: Handler, payload: dict[str, Any]) -> None:
    """The handler's own validation, when it has one: nothing is logged before it passes."""
    check = getattr(handler, "check", None)
    if check is None:
        return
    try:
        check(payload)
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from None


def sender_of(msg: mqtt.MQTTMessage) -> str | None:
    """Who sent a command: the v5 user property "by", else the response topic."""
    props = getattr(msg, "properties", None)
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "by":
            return str(value)
    response = getattr(props, "ResponseTopic", None)
    return str(response) if response else None


class CommandServer:
    """Serves R/cmd/+ on one worker thread, so a slow handler never stalls the network loop."""

    def __init__(
        self,
        conn: MqttConnection,
        root: str,
        handlers: Mapping[str, Handler],
        custody: Custody,
        *,
        version: str = __version__,
        custody_exempt: frozenset[str] = frozenset({"ping"}),
    ) -> None:
        self._conn = conn
        self._root = root
        self._handlers = {"ping": self._ping, **handlers}
        self._custody = custody
        self._version = version
        self._exempt = custody_exempt
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-cmd")

    def start(self) -> None:
        """Subscribe to R/cmd/+ (renewed on every reconnect)."""
        self._conn.subscribe(f"{self._root}/cmd/+", 1, self._on_message)

    def stop(self) -> None:
        """Finish the command in progress and stop."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            logger.warning("ignored retained command on %s", msg.topic)
            return
        self._pool.submit(self._serve, msg)

    def _serve(self, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic.rsplit("/", 1)[-1]
        try:
            reply = self.execute(name, bytes(msg.payload), sender_of(msg))
        except Exception:  # never let a command take the worker down
            logger.exception("command %s failed unexpectedly", name)
            reply = {"ok": False, "error": f"{name}: internal error"}
        self._reply(name, msg, reply)

    def execute(self, name: str, raw: bytes, by: str | None) -> dict[str, Any]:
        """Run one command from its raw payload; the reply object (never raises CommandError)."""
        try:
            payload = validate(name, parse_payload(raw))
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError(f"{name}: not available on this dock")
            _check(name, handler, payload)
            self._record(name, by, payload)
        except CommandError as exc:
            logger.warning("refused command %s from %s: %s", name, by, exc)
            return {"ok": False, "error": str(exc)}
        return self._run(name, handler, payload)

    def _record(self, name: str, by: str | None, payload: dict[str, Any]) -> None:
        if name in self._exempt:
            return
        try:
            self._custody.append("command", name=name, by=by, payload=payload)
        except Exception as exc:
            logger.exception("could not record command %s in the custody log", name)
            raise CommandError(f"{name}: not run, the custody log could not record it") from exc

    def _run(self, name: str, handler: Handler, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            result = handler(payload)
        except Exception as exc:
            logger.exception("command %s failed", name)
            return {"ok": False, "error": f"{name} failed: {exc}"}
        logger.info("command %s done", name)
        return {"ok": True, "result": dict(result or {})}

    def _ping(self, _payload: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "ts": now_iso(), "version": self._version}

    def _reply(self, name: str, msg: mqtt.MQTTMessage, reply: dict[str, Any]) -> None:
        props = getattr(msg, "properties", None)
        topic = getattr(props, "ResponseTopic", None) or f"{self._root}/cmd/{name}/reply"
        out = Properties(PacketTypes.PUBLISH)
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None:
            out.CorrelationData = correlation
        data = json.dumps(reply, ensure_ascii=False).encode()
        try:
            self._conn.publish(topic, data, qos=1, properties=out)
        except ValueError:  # a response topic with wildcards
            logger.warning("invalid response topic %r; replying on the default topic", topic)
            self._conn.publish(f"{self._root}/cmd/{name}/reply", data, qos=1, properties=out)
