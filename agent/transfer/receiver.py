"""The reference central receiver: the broker side of EMQX file transfer over a plain broker."""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection, read_secret
from agent.transfer import protocol as p
from agent.transfer.store import TransferStore

logger = logging.getLogger(__name__)

_QUEUE_DEPTH = 256
_IDLE_S = 0.2


class Receiver:
    """Subscribes `{prefix}/#`, assembles files into the store and answers every command."""

    def __init__(
        self,
        store_dir: Path,
        mqtt_cfg: MqttSection,
        client_id: str = "dock-receiver",
        workers: int = 2,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.mqtt_cfg = mqtt_cfg
        self.prefix = mqtt_cfg.file_transfer_prefix
        self.client = _make_client(client_id, mqtt_cfg)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self._queues: list[queue.Queue[mqtt.MQTTMessage | None]] = [
            queue.Queue(_QUEUE_DEPTH) for _ in range(max(1, workers))
        ]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers and connect (paho reconnects on its own afterwards)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for i, q in enumerate(self._queues):
            t = threading.Thread(target=self._work, args=(q,), name=f"receiver-{i}", daemon=True)
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
            key = msg.topic[len(self.prefix) + 1 :].split("/", 1)[0]
        except UnicodeDecodeError:
            logger.warning("receiver: dropped a command whose topic is not UTF-8")
            return
        self._queues[zlib.crc32(key.encode()) % len(self._queues)].put(msg)

    def _work(self, q: queue.Queue[mqtt.MQTTMessage | None]) -> None:
        store = TransferStore(self.store_dir)
        try:
            while True:
                try:
                    msg = q.get(timeout=_IDLE_S)
                except queue.Empty:
                    self._commit(store, force=True)
                    continue
                if msg is None:
                    break
                self._handle(store, msg)
                self._commit(store, force=False)
        finally:
            store.close()

    def _handle(self, store: TransferStore, msg: mqtt.MQTTMessage) -> None:
        route = _reply_route(msg)
        if route is None:
            return
        client_id, topic, correlation = route
        payload = bytes(msg.payload)
        try:
            _apply(store, client_id, p.parse_command(self.prefix, msg.topic, payload), payload)
            resp = _answer(msg, p.SUCCESS, "success")
        except p.ProtocolError as exc:
            logger.warning("refused %s from %s: %s", msg.topic, client_id, exc.description)
            resp = _answer(msg, exc.reason_code, exc.description)
        except Exception:  # a bad command must never stop the receiver
            logger.exception("error handling %s from %s", msg.topic, client_id)
            resp = _answer(msg, p.IMPLEMENTATION_SPECIFIC_ERROR, "receiver error")
        self.send_response(topic, correlation, resp)

    @staticmethod
    def _commit(store: TransferStore, force: bool) -> None:
        try:
            store.commit(force)
        except OSError as exc:
            logger.error("receiver: could not make segments durable: %s", exc)


def _apply(store: TransferStore, client_id: str, cmd: p.Command, payload: bytes) -> None:
    if isinstance(cmd, p.Segment):
        store.write_segment(client_id, cmd, payload)
    elif isinstance(cmd, p.Init):
        store.begin(client_id, cmd)
    else:
        store.finish(client_id, cmd)


def _reply_route(msg: mqtt.MQTTMessage) -> tuple[str, str, bytes | None] | None:
    """(client id, response topic, correlation data), or None when the command cannot be answered."""
    props = getattr(msg, "properties", None)
    topic = getattr(props, "ResponseTopic", None)
    client_id = p.client_id_from_response_topic(topic)
    if client_id is None or topic is None:
        logger.warning(
            "dropped %r: response topic %r is not $file-response/{client_id}", msg.topic, topic
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
    if cfg.username:
        client.username_pw_set(cfg.username, read_secret(cfg.password_file) or None)
    if cfg.tls_ca:
        client.tls_set(
            ca_certs=cfg.tls_ca, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None
        )
    return client
