"""One MQTT v5 connection with the dock's reconnect policy: backoff, resubscribe, stop on bad auth."""

from __future__ import annotations

import functools
import logging
import os
import random
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttSection, read_secret
from agent.logs import register_secret
from agent.mqtt import paho_client
from agent.schema import ConfigError

logger = logging.getLogger(__name__)

MessageHandler = Callable[[mqtt.MQTTMessage], None]
PublishListener = Callable[[int, ReasonCode], None]
AlertSink = Callable[[str, str, str], None]

# CONNACK reason codes that retrying cannot fix: bad user name or password, not authorized,
# bad authentication method, banned.
AUTH_FAILURES = frozenset({134, 135, 138, 140})
AUTH_ALERT = "mqtt_auth_failed"
SUBSCRIBE_ALERT = "mqtt_subscribe_refused"
_EARLY_SUBACKS = 64  # SUBACKs that came before subscribe() returned their mid (kept at most)
SESSION_EXPIRY_S = 7 * 24 * 3600
_FAILURES_KEPT = 1024


def login_refused(rc: ReasonCode) -> bool:
    """A CONNACK refusal that retrying cannot fix (credentials, authorisation, a ban): stop."""
    return rc.is_failure and rc.value in AUTH_FAILURES


def _connect_properties(session_expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return props


class MqttConnection:
    """A paho v5 client that keeps its session, reconnects with jittered backoff, resubscribes."""

    def __init__(
        self,
        cfg: MqttSection,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        on_online: Callable[[], None] | None = None,
        *,
        on_alert: AlertSink | None = None,
        backoff: tuple[float, float] = (1.0, 60.0),
        session_expiry_s: int = SESSION_EXPIRY_S,
        keepalive: int = 30,
    ) -> None:
        self._cfg = cfg
        self._will = will
        self._on_alert = on_alert
        self._backoff = backoff
        self._session_expiry_s = session_expiry_s
        self._keepalive = keepalive
        self._connected = threading.Event()
        self._auth_failed = False
        self._answered = False  # a CONNACK came since the last disconnect
        self._stopping = False
        self._attempt = 0
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[int, MessageHandler]] = {}
        self._on_connect: list[Callable[[], None]] = [on_online] if on_online else []
        self._on_publish: list[PublishListener] = []
        self._failures: OrderedDict[int, ReasonCode] = OrderedDict()
        self._sub_mids: dict[int, str] = {}  # SUBSCRIBE packet id -> topic filter, until SUBACK
        self._early: OrderedDict[int, list[ReasonCode]] = OrderedDict()
        self.refused: dict[str, str] = {}  # topic filter -> why the broker refused it
        self._granted: set[str] = set()  # topic filters the broker granted on this connection
        self._granted_changed = threading.Condition()
        self.publish_failures = 0
        self.client = self._make_client(client_id)

    def _make_client(self, client_id: str) -> mqtt.Client:
        client = paho_client.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.suppress_exceptions = True  # a failing callback must not kill the network thread
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        set_credentials(client, self._cfg)
        if self._will:
            client.will_set(self._will[0], self._will[1], qos=1, retain=True)
        return client

    @property
    def connected(self) -> bool:
        """True only between a successful CONNACK and the next disconnect."""
        return self._connected.is_set()

    @property
    def auth_failed(self) -> bool:
        """True once the broker refused our credentials; the connection has then stopped."""
        return self._auth_failed

    def start(self) -> None:
        """Connect in the background; never blocks, even when the broker is down."""
        self.client.connect_async(
            self._cfg.host,
            self._cfg.port,
            keepalive=self._keepalive,
            clean_start=False,
            properties=_connect_properties(self._session_expiry_s),
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect asking the broker to publish our will (we are going offline), then stop."""
        self._stopping = True
        if self.connected:
            reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
            self.client.disconnect(reasoncode=reason if self._will else None)
        else:
            self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected; False after `timeout` seconds or once auth has failed."""
        deadline = time.monotonic() + timeout
        while not self._auth_failed:
            if self._connected.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def wait_subscribed(self, topic_filter: str, timeout: float) -> bool:
        """Wait until the broker granted `topic_filter` on this connection (its SUBACK came):
        being connected does not mean messages there reach the dock yet."""
        with self._granted_changed:
            return self._granted_changed.wait_for(lambda: topic_filter in self._granted, timeout)

    def subscribe(self, topic_filter: str, qos: int, handler: MessageHandler) -> None:
        """Route `topic_filter` to `handler`; the subscription is renewed on every connect."""
        safe = _safe_handler(handler, topic_filter)
        with self._lock:
            self._subscriptions[topic_filter] = (qos, safe)
        self.client.message_callback_add(topic_filter, lambda _c, _u, msg: safe(msg))
        if self.connected:
            self._subscribe(topic_filter, qos)

    def add_on_connect(self, cb: Callable[[], None]) -> None:
        """Call `cb` (on the network thread) after every successful (re)connect."""
        with self._lock:
            self._on_connect.append(cb)

    def add_on_publish(self, cb: PublishListener) -> None:
        """Call `cb(mid, reason_code)` on every PUBACK; it runs under paho's lock: do not block."""
        with self._lock:
            self._on_publish.append(cb)

    def on_puback(self, listener: PublishListener) -> None:
        """The file-transfer Transport's PUBACK hook (ack_mode = "puback"): add_on_publish."""
        self.add_on_publish(listener)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Publish; QoS 1 messages are kept by paho and resent after a reconnect until acked."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN:
            # paho queued it and sends it after the reconnect; let wait_for_publish() wait for that
            info.rc = mqtt.MQTT_ERR_SUCCESS
        return info

    def ack_failure(self, mid: int) -> ReasonCode | None:
        """The error reason code the broker acked message `mid` with, or None."""
        return self._failures.get(mid)

    def publish_and_wait(self, topic: str, payload: bytes | str, timeout: float, **kw: Any) -> bool:
        """Publish at QoS 1 and wait: True only when the broker acked it with success."""
        info = self.publish(topic, payload, **kw)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published() and self.ack_failure(info.mid) is None

    def _handle_connect(
        self, client: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Any
    ) -> None:
        self._answered = True
        if rc.is_failure:
            self._refused(rc)
            return
        self._attempt = 0
        self._connected.set()
        logger.info(
            "connected to MQTT %s:%s (session present: %s)",
            self._cfg.host,
            self._cfg.port,
            flags.session_present,
        )
        with self._lock:
            subs = list(self._subscriptions.items())
            callbacks = list(self._on_connect)
        for topic_filter, (qos, _handler) in subs:
            self._subscribe(topic_filter, qos)
        for cb in callbacks:
            _call_safely(cb)

    def _subscribe(self, topic_filter: str, qos: int) -> None:
        """Send SUBSCRIBE and remember its packet id: the SUBACK says whether it was granted."""
        rc, mid = self.client.subscribe(topic_filter, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected after all: the next connect subscribes again
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None:
                self._sub_mids[mid] = topic_filter
                return
        self._judge_suback(topic_filter, early)

    def _handle_subscribe(
        self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        with self._lock:
            topic_filter = self._sub_mids.pop(mid, None)
            if topic_filter is None:  # before subscribe() returned (or a stray): kept, bounded
                self._early[mid] = list(codes)
                while len(self._early) > _EARLY_SUBACKS:
                    self._early.popitem(last=False)
                return
        self._judge_suback(topic_filter, codes)

    def _judge_suback(self, topic_filter: str, codes: list[ReasonCode]) -> None:
        """A refused subscription (e.g. by the broker's ACL) is logged and raised as an alert."""
        refused = [rc for rc in codes if rc.is_failure]
        sink = self._on_alert
        with self._granted_changed:
            (self._granted.discard if refused else self._granted.add)(topic_filter)
            self._granted_changed.notify_all()
        if not refused:
            if self.refused.pop(topic_filter, None) is not None:
                logger.info("MQTT subscription to %s granted", topic_filter)
                if not self.refused and sink:
                    granted = f"MQTT subscription to {topic_filter} granted"
                    _call_safely(lambda: sink(SUBSCRIBE_ALERT, "clear", granted))
            return
        why = str(refused[0])
        self.refused[topic_filter] = why
        where = f"{self._cfg.host}:{self._cfg.port}"
        message = f"MQTT broker {where} refused the subscription to {topic_filter} ({why})"
        logger.error("%s; messages there will not reach the dock", message)
        if sink:
            _call_safely(lambda: sink(SUBSCRIBE_ALERT, "error", message))

    def _refused(self, rc: ReasonCode) -> None:
        self._connected.clear()
        if not login_refused(rc):
            logger.warning("MQTT broker refused the connection: %s; retrying", rc)
            return
        self._auth_failed = True
        message = f"MQTT broker {self._cfg.host}:{self._cfg.port} refused our credentials ({rc})"
        logger.error("%s; not retrying until restarted", message)
        self.client.disconnect()
        self.client.loop_stop()  # from the network thread this only asks it to end
        alert = self._on_alert
        if alert:
            _call_safely(lambda: alert(AUTH_ALERT, "fault", message))

    def _handle_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        with self._granted_changed:
            self._granted.clear()  # a new connection subscribes again
        answered, self._answered = self._answered, False
        if was and not self._stopping:
            logger.warning("MQTT connection lost: %s", rc)
        elif not answered and not self._stopping:
            # e.g. a TLS listener that requires a client certificate we did not present (TLS 1.3)
            logger.warning(
                "MQTT broker %s:%s closed the connection before answering CONNECT (%s); "
                "if it requires a client certificate, check mqtt.tls_cert/tls_key; retrying",
                self._cfg.host,
                self._cfg.port,
                rc,
            )
        self._schedule_retry()

    def _handle_connect_fail(self, _c: Any, _u: Any) -> None:
        # paho calls this inside its `except OSError`: the exception says why (refused, TLS, ...)
        error = sys.exc_info()[1]
        # a certificate problem does not heal by waiting: say so louder than an unreachable broker
        level = logging.WARNING if isinstance(error, ssl.SSLError) else logging.INFO
        where = f"{self._cfg.host}:{self._cfg.port}"
        logger.log(level, "MQTT broker %s: connection failed: %s; retrying", where, error)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        low, high = self._backoff
        delay = min(high, low * 2**self._attempt) * random.uniform(0.5, 1.0)
        self._attempt = min(self._attempt + 1, 30)
        # paho doubles from min_delay; giving it min == max makes the next wait exactly ours.
        self.client.reconnect_delay_set(delay, delay)  # paho sleeps on floats

    def _handle_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.publish_failures += 1
            self._failures[mid] = rc
            while len(self._failures) > _FAILURES_KEPT:
                self._failures.popitem(last=False)
            logger.warning("MQTT broker rejected message %s: %s", mid, rc)
        else:
            self._failures.pop(mid, None)  # mids are reused
        for cb in list(self._on_publish):
            _call_safely(functools.partial(cb, mid, rc))


def set_credentials(client: mqtt.Client, cfg: MqttSection) -> None:
    """User name + password (from its file) and TLS; unreadable files are a ConfigError."""
    if cfg.username:
        try:
            password = read_secret(cfg.password_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([_file_problem("password_file", cfg.password_file, exc)]) from None
        register_secret(password)
        client.username_pw_set(cfg.username, password or None)
    if not cfg.tls_ca:
        return
    try:
        client.tls_set(
            ca_certs=cfg.tls_ca, certfile=cfg.tls_cert or None, keyfile=cfg.tls_key or None
        )
    except OSError as exc:  # also ssl.SSLError: not PEM, or a key that is not the cert's
        raise ConfigError([_tls_problem(cfg, exc)]) from None


def _tls_problem(cfg: MqttSection, exc: Exception) -> str:
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(cfg, key)
        if path and not os.access(path, os.R_OK):
            return _file_problem(key, path, exc)
    files = ", ".join(f"{k} = {getattr(cfg, k)!r}" for k in ("tls_ca", "tls_cert", "tls_key"))
    return f"mqtt.{{tls_ca,tls_cert,tls_key}}: not usable ({files}): {exc}"


def _file_problem(key: str, path: str, exc: Exception) -> str:
    if not isinstance(exc, OSError) or not exc.strerror:
        return f"mqtt.{key} = {path!r}: cannot read it: {exc}"
    where = f" ({exc.filename})" if exc.filename and exc.filename != path else ""
    return f"mqtt.{key} = {path!r}: cannot read it{where}: {exc.strerror}"


def _call_safely(cb: Callable[[], object]) -> None:
    try:
        cb()
    except Exception:
        logger.exception("MQTT callback failed")


def _safe_handler(handler: MessageHandler, topic_filter: str) -> MessageHandler:
    def run(msg: mqtt.MQTTMessage) -> None:
        try:
            handler(msg)
        except Exception:
            logger.exception("handler for %s failed on %s", topic_filter, msg.topic)

    return run
