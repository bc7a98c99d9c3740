"""The shipped site broker (config/mosquitto/, SPEC 11): a real Mosquitto started from it.

TLS, passwords and the ACL: a client cannot read `$file/#` nor answer on `$file-response/#`,
nor write another dock's topics; the receiver and IT can do what the SPEC gives them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.demo.site import Site, make_site
from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.signing import Signer
from agent.trust import keys, signatures
from tests.broker import free_port, mosquitto_binary

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("openssl") is None,
    reason="mosquitto or openssl is not installed",
)
QUIET_S = 0.7  # how long "nothing arrives" is watched for, after a barrier message did arrive


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A Mosquitto started from the shipped config, with users dock-01, dock-02, receiver, it."""
    made = make_site(tmp_path_factory.mktemp("site"), free_port(), ["dock-01", "dock-02"])
    log = open(made.root / "mosquitto.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [mosquitto_binary() or "", "-c", str(made.conf)], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", made.port), 0.2),
            ):
                break
            assert proc.poll() is None, (made.root / "mosquitto.log").read_text()
            time.sleep(0.05)
        yield made
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Client:
    """A TLS client of the site logged in as `user`, recording what it receives."""

    def __init__(self, site: Site, user: str, client_id: str | None = None) -> None:
        self.got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.disconnected = False
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or user, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, site.password_files[user].read_text().strip())
        self.client.tls_set(ca_certs=str(site.ca))
        self.client.on_message = lambda _c, _u, msg: self.got.put(msg)
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(list(codes))
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", site.port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.client.is_connected(), f"{user} could not log in"

    def _on_disconnect(self, *_a: Any) -> None:
        self.disconnected = True

    def subscribe(self, topic: str) -> list[Any]:
        """Subscribe; the SUBACK's reason codes."""
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)

    def publish(
        self,
        topic: str,
        payload: bytes,
        reply_to: str | None = None,
        user_property: tuple[str, str] | None = None,
    ) -> bytes:
        """Publish QoS 1 (with a Response Topic and fresh Correlation Data when `reply_to`)."""
        props = Properties(PacketTypes.PUBLISH)
        corr = uuid.uuid4().bytes
        if user_property is not None:
            props.UserProperty = [user_property]
        if reply_to:
            props.ResponseTopic = reply_to
            props.CorrelationData = corr
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
        return corr

    def topics(self) -> list[str]:
        """Topics of everything received so far (and forget it)."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.got.get_nowait().topic)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def clients(site: Site, *users: str) -> Iterator[list[Client]]:
    made = [Client(site, u) for u in users]
    try:
        yield made
    finally:
        for c in made:
            c.close()


def wait_topic(client: Client, topic: str, timeout: float = 5.0) -> mqtt.MQTTMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            msg = client.got.get(timeout=0.1)
            if msg.topic == topic:
                return msg
    raise AssertionError(f"nothing on {topic}")


def test_a_sniffer_cannot_read_file_transfers_nor_answer_for_the_receiver(site: Site) -> None:
    cfg = MqttSection(
        host="127.0.0.1",
        port=site.port,
        username=site.receiver,
        password_file=str(site.password_files[site.receiver]),
        tls_ca=str(site.ca),
    )
    rx = Receiver(
        site.root / "store",
        cfg,
        site.receiver,
        dock_keys_dir=site.dock_keys_dir,
        signing_key_file=site.receiver_key_file,
    )
    rx.start()
    assert rx.wait_subscribed(10), "the receiver may read $file/#"
    try:
        with clients(site, "dock-01", "dock-02", "it") as (dock, sniffer, it):
            dock.subscribe("$file-response/dock-01")
            for topic in ("$file/#", "$file-response/#", "$file-response/dock-01", "#"):
                sniffer.subscribe(topic)  # refused or empty: what arrives is what counts
            it.subscribe("$file/#")
            signer = Signer("dock-01", keys.load_private(site.dock_key_files["dock-01"]))
            data = os.urandom(3000)
            fid = p.sha256_hex(data)
            meta = signer.sign_meta(fid, p.FileMeta("clip.MP4", len(data), fid))
            reply = "$file-response/dock-01"
            dock.publish(p.init_topic("$file", fid), p.init_payload(meta), reply)
            seg_sig = signer.segment_property(fid, 0, data)
            dock.publish(p.segment_topic("$file", fid, 0, fid), data, reply, seg_sig)
            fin, nonce = signer.fin_payload()
            dock.publish(p.fin_topic("$file", fid, len(data), fid), fin, reply)
            answers = [p.parse_response(wait_topic(dock, reply).payload) for _ in range(3)]
            assert all(a.ok for a in answers), answers
            central = keys.load_public(site.central_pub)
            message = signatures.fin_message("dock-01", fid, len(data), fid, nonce)
            assert signatures.verify(central, message, answers[2].receipt)
            assert (site.root / "store" / "dock-01" / fid / "clip.MP4").read_bytes() == data
            forged = p.Response(topic="x", packet_id=1, reason_code=0, reason_description="ok")
            sniffer.publish(reply, p.response_payload(forged))
            sniffer.publish("$file-response/dock-02", p.response_payload(forged))
            dock.publish("dock/dock-01/status", b"{}")  # a barrier: it does arrive at IT ...
            time.sleep(QUIET_S)
            assert dock.topics() == [], "no forged answer reaches the dock"
            assert sniffer.topics() == [], "the sniffer sees no transfer and no answer"
            assert it.topics() == [], "IT does not read $file/# either"
    finally:
        rx.stop()


def test_docks_write_only_their_own_topics_and_it_reads_all_and_commands(site: Site) -> None:
    with clients(site, "dock-01", "dock-02", "it") as (dock1, dock2, it):
        it.subscribe("dock/#")
        dock1.subscribe("dock/dock-01/cmd/+")
        dock2.subscribe("dock/dock-01/#")  # another dock's topics: nothing arrives
        dock2.publish("dock/dock-01/status", b'{"online": false}')
        dock2.publish("dock/dock-01/cmd/ping", b"{}")
        dock1.publish("dock/dock-01/status", b'{"online": true}')
        assert wait_topic(it, "dock/dock-01/status").payload == b'{"online": true}'
        it.publish("dock/dock-01/cmd/ping", b"{}")
        assert wait_topic(dock1, "dock/dock-01/cmd/ping").payload == b"{}"
        it.publish("dock/dock-01/status", b"forged by IT")
        time.sleep(QUIET_S)
        assert it.topics() == ["dock/dock-01/cmd/ping"], (
            "IT reads back its own command, and neither dock-02 nor IT can write dock-01's status"
        )
        assert dock1.topics() == [], "dock-02's command never reached dock-01"
        assert dock2.topics() == []


def test_a_client_id_is_its_user_name(site: Site) -> None:
    with clients(site, "dock-01") as (dock1,):
        impostor = Client(site, "dock-02", client_id="dock-01")
        try:
            impostor.subscribe("$file-response/dock-01")
            time.sleep(QUIET_S)
            assert not dock1.disconnected, "the same client id did not take dock-01's session"
            dock1.publish("dock/dock-01/status", b"{}")
            assert dock1.client.is_connected()
        finally:
            impostor.close()
    wrong = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="x", protocol=mqtt.MQTTv5)
    wrong.username_pw_set("dock-01", "not its password")
    wrong.tls_set(ca_certs=str(site.ca))
    wrong.connect("127.0.0.1", site.port)
    wrong.loop_start()
    time.sleep(QUIET_S)
    assert not wrong.is_connected(), "a wrong password is refused"
    wrong.loop_stop()
