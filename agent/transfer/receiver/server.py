"""The reference central receiver: the broker side of EMQX file transfer over a plain broker."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.chain.receiving import CustodyDesk
from agent.config import MqttSection
from agent.durable import make_dirs
from agent.mqtt.connection import AUTH_ALERT, SUBSCRIBE_ALERT, MqttConnection
from agent.transfer import protocol as p
from agent.transfer.receiver import trustdir
from agent.transfer.receiver.escape import UNIDENTIFIED_DIR, escape_file_id
from agent.transfer.receiver.expiry import DEFAULT_PARTIAL_TTL_S
from agent.transfer.receiver.oncelog import OnceLog
from agent.transfer.receiver.partials import (
    DEFAULT_MAX_FILE_BYTES,
    StorageError,
    TransferStore,
    check_segment,
    storage_error,
)
from agent.transfer.receiver.quota import InProgress
from agent.transfer.receiver.trustdir import DockKeys, fin_nonce, load_receiver_key, receipt

logger = logging.getLogger(__name__)

_QUEUE_DEPTH = 256
_IDLE_S = 0.2
EXPIRE_EVERY_S = 3600.0  # abandoned partials are looked for at start-up and this often


# (client id, response topic, correlation data); no response topic: an unidentified transfer
# kept with unidentified = "store", answered nowhere.
Route = tuple[str, str | None, bytes | None]
# A command for a worker; a Segment in the last place means: checked and answered, just store it.
Job = tuple[mqtt.MQTTMessage, Route, p.Segment | None]


class Receiver:
    """Subscribes `{prefix}/#` and `{prefix}-async/#`, assembles files and answers every command.

    Segments of a file already open are checked (bounds, SHA-256) and answered on the network
    thread, then written by the file's worker; every other command (init, fin, anything refused
    or unknown) is handled and answered by the worker, in order behind the writes it follows.
    A command with no Response Topic is dropped (one log line per transfer), or with
    `unidentified = "store"` kept under `{store}/_unidentified/`. With `dock_keys_dir`, inits
    and segments must carry the dock's valid `dock_sig`; a successful fin with a nonce carries
    a `receipt` signed with the receiver's key (SPEC 11). An
    unexpected error in a worker or the network thread sets `failed`: the process then ends
    non-zero, so that systemd restarts it; `healthy()` feeds the watchdog.
    """

    def __init__(
        self,
        store_dir: Path,
        mqtt_cfg: MqttSection,
        client_id: str = "dock-receiver",
        workers: int = 2,
        partial_ttl_s: float = DEFAULT_PARTIAL_TTL_S,
        expire_every_s: float = EXPIRE_EVERY_S,
        unidentified: str = "refuse",
        dock_keys_dir: Path | str | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_partials_per_client: int = 16,
        signing_key_file: Path | str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.mqtt_cfg = mqtt_cfg
        self.prefix = mqtt_cfg.file_transfer_prefix
        # The dock's connection policy (agent.mqtt.connection): backoff, stop on a refused
        # login, every SUBACK checked. No session kept: commands sent while it was away are
        # resent by their docks, not replayed from a backlog.
        self.conn = MqttConnection(
            mqtt_cfg, client_id, on_alert=self._on_alert, backoff=(1.0, 30.0), session_expiry_s=0
        )
        self.filters = [f"{x}/#" for x in (self.prefix, p.async_prefix(self.prefix))]
        for topic_filter in self.filters:
            self.conn.subscribe(topic_filter, 1, self._on_command)
        self.failed = threading.Event()
        self.failure = ""
        self.keys = DockKeys(dock_keys_dir) if dock_keys_dir else None
        self.custody = CustodyDesk(self.store_dir, self.keys.key if self.keys else None)
        key_path = Path(signing_key_file or self.store_dir.parent / "receiver.key")
        self.signing_key = load_receiver_key(key_path, client_id)
        self.store_unidentified = unidentified == "store" and self.keys is None
        count = max(1, workers)
        self._queues: list[queue.Queue[Job | None]] = [
            queue.Queue(_QUEUE_DEPTH) for _ in range(count)
        ]
        in_progress = InProgress(self.store_dir, max_partials_per_client)
        self._stores = [
            TransferStore(self.store_dir, in_progress, max_file_bytes) for _ in range(count)
        ]
        self._threads: list[threading.Thread] = []
        self.partial_ttl_s = partial_ttl_s
        self.expire_every_s = expire_every_s
        self._once = OnceLog(logger)

    def start(self) -> None:
        """Start the workers and connect (the connection reconnects on its own afterwards)."""
        make_dirs(self.store_dir)
        for i, q in enumerate(self._queues):
            t = threading.Thread(
                target=self._work, args=(i, q, self._stores[i]), name=f"receiver-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        self.conn.start()
        logger.info("receiver connecting; subscribing %s", ", ".join(self.filters))

    def stop(self) -> None:
        """Disconnect, let the workers finish what is queued, and close every partial file."""
        self.conn.stop()
        for q in self._queues:
            with contextlib.suppress(queue.Full):  # a dead worker's queue may be full
                q.put(None, timeout=1.0)
        for t in self._threads:
            t.join(30)
        self._threads.clear()

    def healthy(self) -> bool:
        """True while nothing failed and every worker is alive (what feeds the watchdog)."""
        return not self.failed.is_set() and all(t.is_alive() for t in self._threads)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the broker granted both command subscriptions on this connection."""
        deadline = time.monotonic() + timeout
        return all(
            self.conn.wait_subscribed(f, max(0.0, deadline - time.monotonic()))
            for f in self.filters
        )

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        """Publish one answer (EMQX shape) on the sender's response topic, echoing correlation data."""
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        self.conn.publish(topic, p.response_payload(resp), qos=1, properties=props)

    def _fail(self, what: str) -> None:
        """End the receiver (the process exits non-zero); `what` is why, in words."""
        self.failure = self.failure or what
        self.failed.set()

    def _on_alert(self, code: str, severity: str, message: str) -> None:
        """What the connection raises as an alert ends a receiver: a refused login (it has
        stopped; retrying cannot fix it) or a refused subscription (no command would arrive).
        The connection has logged it; the process then ends non-zero, naming it."""
        if severity != "clear" and code in (AUTH_ALERT, SUBSCRIBE_ALERT):
            self._fail(message)

    def _on_command(self, msg: mqtt.MQTTMessage) -> None:
        try:
            self._dispatch(msg)
        except Exception:  # paho's thread would die and the receiver go deaf: fail loudly
            logger.critical("receiver: network thread failed; stopping", exc_info=True)
            self._fail("its network thread failed (see above)")

    def _dispatch(self, msg: mqtt.MQTTMessage) -> None:
        if self.failed.is_set():
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            logger.warning("receiver: dropped a command whose topic is not UTF-8")
            return
        token = self._file_token(topic)
        route = None if token is None else self._route(msg, token)
        if token is None or route is None:
            return
        i = _worker_of(escape_file_id(token) if token else "", len(self._queues))
        checked = None if route[1] is None else self._fast_segment(i, msg, topic, route)
        self._queues[i].put((msg, route, checked))

    def _file_token(self, topic: str) -> str | None:
        """The file id level of a command topic (unchecked), or None for a topic not ours."""
        for prefix in (self.prefix, p.async_prefix(self.prefix)):
            if topic.startswith(prefix + "/"):
                return topic[len(prefix) + 1 :].split("/", 1)[0]
        return None

    def _route(self, msg: mqtt.MQTTMessage, token: str) -> Route | None:
        """Who sent a command and where to answer; None (logged once per transfer) to drop it."""
        props = getattr(msg, "properties", None)
        reply_to = getattr(props, "ResponseTopic", None)
        if reply_to is None:
            if self.store_unidentified:
                return UNIDENTIFIED_DIR, None, None
            why = (
                "with dock_keys_dir set, only signed transfers of known docks are taken"
                if self.keys
                else 'set [receiver] unidentified = "store" to keep such files'
            )
            self._once.warning(
                ("unidentified", token),
                "dropped transfer %r: its commands carry no Response Topic, so no client to "
                "answer or file it under (%s)",
                token[:80],
                why,
            )
            return None
        client_id = p.client_id_from_response_topic(reply_to)
        if client_id is None or client_id == UNIDENTIFIED_DIR:
            self._once.warning(
                ("bad reply", reply_to, token),
                "dropped transfer %r: response topic %r is not $file-response/{client_id}",
                token[:80],
                reply_to[:120],
            )
            return None
        return client_id, reply_to, getattr(props, "CorrelationData", None)

    def _fast_segment(
        self, worker: int, msg: mqtt.MQTTMessage, topic: str, route: Route
    ) -> p.Segment | None:
        """Check and answer a segment of an open file here; None leaves the command to the worker."""
        if topic.endswith("/init") or route[1] is None:
            return None
        try:
            cmd = p.parse_request(self.prefix, topic, b"")[1]
            if not isinstance(cmd, p.Segment):
                return None
            size = self._stores[worker].declared_size(route[0], cmd.file_id)
            if size is None:
                return None
            check_segment(size, cmd, msg.payload)
        except p.ProtocolError:
            return None  # the worker refuses it, with the reason, in order
        props = getattr(msg, "properties", None)  # checksum, when given, checked just above
        if self.keys is not None and not self.keys.segment_ok(
            route[0], cmd, msg.payload, props, cmd.checksum
        ):
            return None  # refused by the worker; it never touches the stored ranges
        self.send_response(route[1], route[2], _answer(msg, p.SUCCESS, "success"))
        return cmd

    def _work(self, index: int, q: queue.Queue[Job | None], store: TransferStore) -> None:
        try:
            self._serve(index, q, store)
        except BaseException:  # no worker may die silently: the process ends, systemd restarts it
            logger.critical("receiver worker %d failed; stopping", index, exc_info=True)
            self._fail(f"worker {index} failed (see above)")
        finally:
            try:
                store.close()
            except Exception:  # closing after a failure: already reported
                logger.exception("receiver worker %d: closing its files failed", index)

    def _serve(self, index: int, q: queue.Queue[Job | None], store: TransferStore) -> None:
        owns = partial(_owned_by, index, len(self._queues))
        expire_due = 0.0
        while True:
            if time.monotonic() >= expire_due:
                self._expire(store, owns)
                expire_due = time.monotonic() + self.expire_every_s
            try:
                job = q.get(timeout=_IDLE_S)
            except queue.Empty:
                self._commit(store, force=True)
                continue
            if job is None:
                return
            self._handle(store, *job)
            self._commit(store, force=False)

    def _handle(
        self, store: TransferStore, msg: mqtt.MQTTMessage, route: Route, checked: p.Segment | None
    ) -> None:
        client_id, reply_to, correlation = route
        if checked is not None:
            try:  # already answered: the store remembers a write error, and the fin reports it
                store.write_checked(client_id, checked, msg.payload)  # no copy of the segment
            except OSError as exc:  # e.g. the partial could not be reopened
                logger.error("receiver: could not write %s: %s", msg.topic, exc)
            return
        payload = bytes(msg.payload)
        try:
            req = p.parse_request(self.prefix, msg.topic, payload)[1]
            got = self._apply(store, client_id, req, payload, getattr(msg, "properties", None))
            resp = _answer(msg, p.SUCCESS, "success", got)
        except p.ProtocolError as exc:
            if not isinstance(exc, StorageError):  # the store logs those, once per file
                self._once.warning(
                    ("refused", client_id, self._file_token(msg.topic), exc.reason_code),
                    "refused %s from %s: %s (further refusals of this transfer not logged)",
                    msg.topic[:160],
                    client_id,
                    exc.description,
                )
            resp = _answer(msg, exc.reason_code, exc.description, getattr(exc, "receipt", None))
        except OSError as exc:  # the store's disk, not the command: refused, the worker lives on
            err = storage_error(exc)
            logger.error("receiver: %s from %s: %s", msg.topic[:160], client_id, err.description)
            resp = _answer(msg, err.reason_code, err.description)
        except Exception:
            if reply_to is not None:  # the sender learns at once; the process then ends
                self.send_response(
                    reply_to, correlation, _answer(msg, p.IMPLEMENTATION_SPECIFIC_ERROR, "error")
                )
            raise
        if reply_to is not None:
            resp = trustdir.signed(resp, self.signing_key, client_id, msg, correlation)
            self.send_response(reply_to, correlation, resp)

    def _apply(
        self, store: TransferStore, client_id: str, req: p.Request, data: bytes, props: Any
    ) -> str | None:
        """Carry out one command (checked first: nothing unverified is stored); a fin's receipt."""
        keys = self.keys
        if isinstance(req, p.Segment):
            if keys is not None:
                keys.check_segment(client_id, req, data, props)
            store.write_segment(client_id, req, data)
        elif isinstance(req, p.Init):
            if keys is not None:
                keys.check_init(client_id, req, data)  # refused before anything is stored
                store.begin(client_id, req, lambda m: keys.meta_signed(client_id, req.file_id, m))
            else:
                store.begin(client_id, req)
        elif isinstance(req, p.Fin):
            nonce = fin_nonce(data)
            try:
                sha = store.finish(client_id, req, signed=keys is not None)
                self.custody.on_fin(client_id, store.file_dir(client_id, req.file_id))  # SPEC 8.1
            except p.ProtocolError as exc:  # signed: the dock acts on it at once (SPEC 11)
                trustdir.sign_refusal(exc, self.signing_key, client_id, req, nonce)
                raise
            if nonce is not None:
                return receipt(self.signing_key, client_id, req, sha, nonce)
        # abort: acknowledged, nothing dropped (as EMQX; an abort is not signed)
        return None

    def _expire(self, store: TransferStore, owns: Callable[[str], bool]) -> None:
        """Remove the abandoned partials this worker owns; an error is logged, never raised."""
        try:
            store.expire_partials(self.partial_ttl_s, owns)
        except Exception:  # expiry must never stop the worker
            logger.exception("receiver: expiring abandoned partials failed")

    @staticmethod
    def _commit(store: TransferStore, force: bool) -> None:
        try:
            store.commit(force)
        except OSError as exc:
            logger.error("receiver: could not make segments durable: %s", exc)


def _worker_of(dirname: str, workers: int) -> int:
    """The worker that handles every command of a transfer (and expires its partial)."""
    return zlib.crc32(dirname.encode("utf-8", "surrogatepass")) % workers


def _owned_by(index: int, workers: int, dirname: str) -> bool:
    return _worker_of(dirname, workers) == index


def _answer(
    msg: mqtt.MQTTMessage, code: int, description: str, receipt: str | None = None
) -> p.Response:
    return p.Response(
        topic=msg.topic,
        packet_id=msg.mid,
        reason_code=code,
        reason_description=description,
        receipt=receipt,
    )
