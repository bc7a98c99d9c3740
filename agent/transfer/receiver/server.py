"""The reference central receiver: the broker side of EMQX file transfer over a plain broker."""

from __future__ import annotations

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
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.mqtt.connection import set_credentials
from agent.transfer import protocol as p
from agent.transfer.receiver.expiry import DEFAULT_PARTIAL_TTL_S
from agent.transfer.receiver.partials import StorageError, TransferStore, check_segment

logger = logging.getLogger(__name__)

_QUEUE_DEPTH = 256
_IDLE_S = 0.2
EXPIRE_EVERY_S = 3600.0  # abandoned partials are looked for at start-up and this often


Route = tuple[str, str, bytes | None]  # (client id, response topic, correlation data)
# A command for a worker; a Segment in the last place means: checked and answered, just store it.
Job = tuple[mqtt.MQTTMessage, Route, p.Segment | None]


class Receiver:
    """Subscribes `{prefix}/#`, assembles files into the store and answers every command.

    Segments of a file already open are checked (bounds, SHA-256) and answered on the network
    thread, then written by the file's worker; every other command (init, fin, anything refused
    or unknown) is handled and answered by the worker, in order behind the writes it follows.
    Once a write of a file failed (disk full), its segments are answered after the write, and
    its fin reports the error. Each worker also expires the abandoned partials of the files it
    owns (no activity for `partial_ttl_s`), at start-up and every `expire_every_s`.
    """

    def __init__(
        self,
        store_dir: Path,
        mqtt_cfg: MqttSection,
        client_id: str = "dock-receiver",
        workers: int = 2,
        partial_ttl_s: float = DEFAULT_PARTIAL_TTL_S,
        expire_every_s: float = EXPIRE_EVERY_S,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.mqtt_cfg = mqtt_cfg
        self.prefix = mqtt_cfg.file_transfer_prefix
        self.client = _make_client(client_id, mqtt_cfg)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        count = max(1, workers)
        self._queues: list[queue.Queue[Job | None]] = [
            queue.Queue(_QUEUE_DEPTH) for _ in range(count)
        ]
        self._stores = [TransferStore(self.store_dir) for _ in range(count)]
        self._threads: list[threading.Thread] = []
        self.partial_ttl_s = partial_ttl_s
        self.expire_every_s = expire_every_s

    def start(self) -> None:
        """Start the workers and connect (paho reconnects on its own afterwards)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for i, q in enumerate(self._queues):
            t = threading.Thread(
                target=self._work, args=(i, q, self._stores[i]), name=f"receiver-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        self.client.connect_async(self.mqtt_cfg.host, self.mqtt_cfg.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect, let the workers finish what is queued, and close every partial file."""
        self.client.disconnect()
        self.client.loop_stop()
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the command subscription is acknowledged."""
        return self.subscribed.wait(timeout)

    def send_response(self, topic: str, correlation: bytes | None, resp: p.Response) -> None:
        """Publish one answer (EMQX shape) on the sender's response topic, echoing correlation data."""
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        self.client.publish(topic, p.response_payload(resp), qos=1, properties=props)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("receiver: broker refused the connection: %s", rc)
            return
        self.subscribed.clear()
        client.subscribe(f"{self.prefix}/#", qos=1)
        logger.info("receiver connected; subscribing %s/#", self.prefix)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any = None
    ) -> None:
        if all(not c.is_failure for c in codes):
            self.subscribed.set()
        else:
            logger.error("receiver: subscription to %s/# refused: %s", self.prefix, codes)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            logger.warning("receiver: dropped a command whose topic is not UTF-8")
            return
        route = _reply_route(msg, topic)
        if route is None:
            return
        i = _worker_of(topic[len(self.prefix) + 1 :].split("/", 1)[0], len(self._queues))
        self._queues[i].put((msg, route, self._fast_segment(self._stores[i], msg, topic, route)))

    def _fast_segment(
        self, store: TransferStore, msg: mqtt.MQTTMessage, topic: str, route: Route
    ) -> p.Segment | None:
        """Check and answer a segment of an open file here; None leaves the command to the worker."""
        try:
            cmd = p.parse_segment(self.prefix, topic)
            size = None if cmd is None else store.declared_size(route[0], cmd.file_id)
            if cmd is None or size is None:
                return None
            check_segment(size, cmd, msg.payload)
        except p.ProtocolError:
            return None  # the worker refuses it, with the reason, in order
        self.send_response(route[1], route[2], _answer(msg, p.SUCCESS, "success"))
        return cmd

    def _work(self, index: int, q: queue.Queue[Job | None], store: TransferStore) -> None:
        owns = partial(_owned_by, index, len(self._queues))
        expire_due = 0.0
        try:
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
                    break
                self._handle(store, *job)
                self._commit(store, force=False)
        finally:
            store.close()

    def _handle(
        self, store: TransferStore, msg: mqtt.MQTTMessage, route: Route, checked: p.Segment | None
    ) -> None:
        client_id, topic, correlation = route
        payload = bytes(msg.payload)
        if checked is not None:
            try:  # already answered: the store remembers a write error, and the fin reports it
                store.write_checked(client_id, checked, payload)
            except OSError as exc:  # e.g. the partial could not be reopened
                logger.error("receiver: could not write %s: %s", msg.topic, exc)
            return
        try:
            _apply(store, client_id, p.parse_command(self.prefix, msg.topic, payload), payload)
            resp = _answer(msg, p.SUCCESS, "success")
        except p.ProtocolError as exc:
            if not isinstance(exc, StorageError):  # the store logs those, once per file
                logger.warning("refused %s from %s: %s", msg.topic, client_id, exc.description)
            resp = _answer(msg, exc.reason_code, exc.description)
        except Exception:  # a bad command must never stop the receiver
            logger.exception("error handling %s from %s", msg.topic, client_id)
            resp = _answer(msg, p.IMPLEMENTATION_SPECIFIC_ERROR, "receiver error")
        self.send_response(topic, correlation, resp)

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


def _worker_of(file_id: str, workers: int) -> int:
    """The worker that handles every command of a file (and expires its partial)."""
    return zlib.crc32(file_id.encode()) % workers


def _owned_by(index: int, workers: int, file_id: str) -> bool:
    return _worker_of(file_id, workers) == index


def _apply(store: TransferStore, client_id: str, cmd: p.Command, payload: bytes) -> None:
    if isinstance(cmd, p.Segment):
        store.write_segment(client_id, cmd, payload)
    elif isinstance(cmd, p.Init):
        store.begin(client_id, cmd)
    else:
        store.finish(client_id, cmd)


def _reply_route(msg: mqtt.MQTTMessage, command: str) -> Route | None:
    """(client id, response topic, correlation data), or None when the command cannot be answered."""
    props = getattr(msg, "properties", None)
    topic = getattr(props, "ResponseTopic", None)
    client_id = p.client_id_from_response_topic(topic)
    if client_id is None or topic is None:
        logger.warning(
            "dropped %r: response topic %r is not $file-response/{client_id}", command, topic
        )
        return None
    correlation = getattr(props, "CorrelationData", None)
    return client_id, topic, correlation


def _answer(msg: mqtt.MQTTMessage, code: int, description: str) -> p.Response:
    return p.Response(
        topic=msg.topic, packet_id=msg.mid, reason_code=code, reason_description=description
    )


def _make_client(client_id: str, cfg: MqttSection) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(1, 30)
    set_credentials(client, cfg)  # unreadable secrets or certificates: a ConfigError naming the key
    return client
