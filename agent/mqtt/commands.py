"""Remote commands on R/cmd/{name} (SPEC 6, 11): rate-limited, checked, recorded, run, answered.

On the network thread each message takes a token of `[mqtt] command_rate_per_min` (over the
rate: a "rate limited" error reply), is checked for form (`command_policy.admit`) and joins a
bounded queue, where an identical command already waiting absorbs it (both senders get its
reply). One worker thread takes commands in order, checks them against what exists on this dock
(`command_policy.check_possible`: the note, the clip, room to resync), and only then writes
the custody entry (`command`, name, claimed_by, payload) and runs the handler; a command the
custody log could not record is not run. A handler with a `check(payload)` method has it called before
anything is logged too; a ValueError from it refuses the command. Every refusal is an error reply naming the problem; nothing is
written for it. Replies to commands refused for the rate or a full queue are themselves limited
to the same rate; beyond it such commands are dropped and counted in one log line a minute.

The reply goes only to R/cmd/{name}/reply, with the request's Correlation Data:
{"ok": true, "result": {...}} or {"ok": false, "error": "..."}. A Response Topic the sender
names is ignored (SPEC 11): anyone may publish a command, so a reply sent where the command
asks would hand clip hashes and the custody head to any topic an attacker reads. The broker
does not say who published: the v5 user property "by" is what the sender claims to be, and
is recorded as `claimed_by`, never as an identity. `ping` is answered by the worker thread
and exempt from the custody log (monitoring pings would flood an fsync-per-entry evidence log).
Retained messages are ignored: a retained command would run again on every resubscribe.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import __version__
from agent.events import now_iso
from agent.mqtt.command_policy import (
    MAX_PAYLOAD,
    Command,
    CommandError,
    Known,
    admit,
    check_possible,
)
from agent.mqtt.command_queue import CommandQueue, Queued, RateLimit
from agent.mqtt.connection import MqttConnection

__all__ = ["MAX_PAYLOAD", "CommandError", "CommandServer", "Handler", "claimed_sender"]

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]
QUEUE_BOUND = 32  # commands waiting at most; a burst of the full rate mostly fits
REPORT_EVERY_S = 60.0


class Custody(Protocol):
    """What commands need of the custody log."""

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one entry (fsync'd) and return it."""
        ...


class ReplyTo(NamedTuple):
    """How one sender's reply is told apart on R/cmd/{name}/reply."""

    name: str
    correlation: bytes | None


def claimed_sender(msg: mqtt.MQTTMessage) -> str | None:
    """Who the sender says it is (v5 user property "by"): a claim, nothing the broker proved."""
    props = getattr(msg, "properties", None)
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "by":
            return str(value)
    return None


def reply_to(msg: mqtt.MQTTMessage) -> ReplyTo:
    """The command's name and correlation data; its Response Topic, if any, is not used."""
    props = getattr(msg, "properties", None)
    correlation = getattr(props, "CorrelationData", None)
    return ReplyTo(
        msg.topic.rsplit("/", 1)[-1], bytes(correlation) if correlation is not None else None
    )


def _check(cmd: Command, handler: Handler) -> None:
    """The handler's own validation, when it has one: nothing is logged before it passes."""
    check = getattr(handler, "check", None)
    if check is None:
        return
    try:
        check(cmd.payload)
    except ValueError as exc:
        raise CommandError(f"{cmd.name}: {exc}") from None


class CommandServer:
    """Serves R/cmd/+ on one worker thread, so a slow handler never stalls the network loop."""

    def __init__(
        self,
        conn: MqttConnection,
        root: str,
        handlers: Mapping[str, Handler],
        custody: Custody,
        known: Known,
        *,
        rate_per_min: int = 60,
        queue_bound: int = QUEUE_BOUND,
        version: str = __version__,
        custody_exempt: frozenset[str] = frozenset({"ping"}),
    ) -> None:
        self._conn = conn
        self._root = root
        self._handlers = {"ping": self._ping, **handlers}
        self._custody = custody
        self._known = known
        self._version = version
        self._exempt = custody_exempt
        self.rate_per_min = rate_per_min
        self._rate = RateLimit(rate_per_min)
        self._refusals = RateLimit(rate_per_min)  # replies to commands refused unread
        self.queue: CommandQueue[Command, ReplyTo] = CommandQueue(queue_bound)
        self._limited = [0, 0]  # refused unread since the last report: answered, dropped
        self._report_at = time.monotonic() + REPORT_EVERY_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mqtt-cmd", daemon=True)

    def start(self) -> None:
        """Subscribe to R/cmd/+ (renewed on every reconnect) and start the worker."""
        self._thread.start()
        self._conn.subscribe(f"{self._root}/cmd/+", 1, self._on_message)

    def stop(self) -> None:
        """Finish the command in progress and stop; commands still queued are dropped."""
        self._stop.set()
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(30)

    # ---- network thread ---------------------------------------------------------------------

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            logger.warning("ignored retained command on %s", msg.topic)
            return
        to = reply_to(msg)
        wait = self._rate.take()
        if wait > 0:
            self._refuse_unread(
                to,
                f"rate limited: more than {self.rate_per_min} commands a minute; "
                f"retry in {math.ceil(wait)} s",
            )
            return
        claimed_by = claimed_sender(msg)
        try:
            cmd = admit(to.name, bytes(msg.payload), claimed_by)
        except CommandError as exc:
            self._refused(to.name, claimed_by, exc)
            self._reply(to, {"ok": False, "error": str(exc)})
            return
        if self.queue.put(cmd.key, cmd, to) == "full":
            self._refuse_unread(to, f"busy: {self.queue.bound} commands are waiting; try later")

    def _refuse_unread(self, to: ReplyTo, error: str) -> None:
        """Refuse a command without reading it; the replies to these are rate-limited too."""
        answered = self._refusals.take() == 0.0
        self._limited[0 if answered else 1] += 1
        if answered:
            self._reply(to, {"ok": False, "error": error})
        now = time.monotonic()
        if now >= self._report_at:
            self._report_at = now + REPORT_EVERY_S
            logger.warning(
                "%d remote commands refused over the rate limit or with the queue full "
                "(%d answered, %d dropped without a reply)",
                sum(self._limited),
                *self._limited,
            )
            self._limited = [0, 0]

    # ---- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            queued = self.queue.get(0.5)
            if queued is not None and not self._stop.is_set():
                self._serve(queued)

    def _serve(self, queued: Queued[Command, ReplyTo]) -> None:
        cmd = queued.item
        try:
            reply = self._execute(cmd)
        except Exception:  # never let a command take the worker down
            logger.exception("command %s failed unexpectedly", cmd.name)
            reply = {"ok": False, "error": f"{cmd.name}: internal error"}
        for to in queued.waiters:
            self._reply(to, reply)

    def execute(self, name: str, raw: bytes, claimed_by: str | None) -> dict[str, Any]:
        """Run one command from its raw payload at once (no rate limit); the reply object."""
        try:
            cmd = admit(name, raw, claimed_by)
        except CommandError as exc:
            self._refused(name, claimed_by, exc)
            return {"ok": False, "error": str(exc)}
        return self._execute(cmd)

    def _execute(self, cmd: Command) -> dict[str, Any]:
        handler = self._handlers.get(cmd.name)
        try:
            if handler is None:
                raise CommandError(f"{cmd.name}: not available on this dock")
            check_possible(cmd, self._known)
            _check(cmd, handler)
            self._record(cmd)
        except CommandError as exc:
            self._refused(cmd.name, cmd.claimed_by, exc)
            return {"ok": False, "error": str(exc)}
        return self._run(cmd, handler)

    def _refused(self, name: str, claimed_by: str | None, exc: CommandError) -> None:
        logger.warning("refused command %.64r (claimed by %.200r): %s", name, claimed_by, exc)

    def _record(self, cmd: Command) -> None:
        if cmd.name in self._exempt:
            return
        try:
            self._custody.append(
                "command", name=cmd.name, claimed_by=cmd.claimed_by, payload=cmd.payload
            )
        except Exception as exc:
            logger.exception("could not record command %s in the custody log", cmd.name)
            raise CommandError(f"{cmd.name}: not run, the custody log could not record it") from exc

    def _run(self, cmd: Command, handler: Handler) -> dict[str, Any]:
        try:
            result = handler(cmd.payload)
        except CommandError as exc:
            logger.warning("command %s failed: %s", cmd.name, exc)
            return {"ok": False, "error": f"{cmd.name} failed: {exc}"}
        except Exception as exc:
            logger.exception("command %s failed", cmd.name)
            return {"ok": False, "error": f"{cmd.name} failed: {exc}"}
        logger.info("command %s done", cmd.name)
        return {"ok": True, "result": dict(result or {})}

    def _ping(self, _payload: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "ts": now_iso(), "version": self._version}

    def _reply(self, to: ReplyTo, reply: dict[str, Any]) -> None:
        out = Properties(PacketTypes.PUBLISH)
        if to.correlation is not None:
            out.CorrelationData = to.correlation
        data = json.dumps(reply, ensure_ascii=False).encode()
        self._conn.publish(f"{self._root}/cmd/{to.name}/reply", data, qos=1, properties=out)
