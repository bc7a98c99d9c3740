"""MqttConnection against a real Mosquitto: connect, resubscribe, refused auth, will, QoS 1 across outages."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.mqtt.connection import AUTH_ALERT, SUBSCRIBE_ALERT, MqttConnection
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.mqtt_helpers import FAST_BACKOFF, Recorder, delivered, section, wait_for

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_broker(tmp_path / "broker") as b:
        yield b


def test_connects_and_routes_messages(broker: Broker) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    conn = MqttConnection(section(broker), "dock-t1", backoff=FAST_BACKOFF)
    conn.subscribe("dock/t1/cmd/+", 1, lambda m: got.put(m.payload))
    conn.start()
    try:
        assert conn.wait_connected(5)
        assert conn.connected
        send = lambda: conn.publish_and_wait("dock/t1/cmd/ping", b"hello", timeout=5)  # noqa: E731
        assert delivered(send, got, 5) == b"hello"
    finally:
        conn.stop()
    assert not conn.connected


def test_start_does_not_block_when_broker_is_down(tmp_path: Path) -> None:
    from agent.config import MqttSection
    from tests.broker import free_port

    conn = MqttConnection(MqttSection(port=free_port()), "dock-down", backoff=FAST_BACKOFF)
    t0 = time.monotonic()
    conn.start()
    assert time.monotonic() - t0 < 0.5
    assert not conn.wait_connected(0.5)
    conn.stop()


def test_resubscribes_after_broker_restart(broker: Broker) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    reconnects: list[int] = []
    conn = MqttConnection(section(broker), "dock-t2", backoff=FAST_BACKOFF)
    conn.subscribe("dock/t2/cmd/+", 1, lambda m: got.put(m.payload))
    conn.add_on_connect(lambda: reconnects.append(1))
    conn.start()
    try:
        assert conn.wait_connected(5)
        broker.stop(kill=True)  # SIGKILL: the broker forgets the session and its subscriptions
        wait_for(lambda: not conn.connected, 5, "disconnect noticed")
        broker.start()
        wait_for(lambda: len(reconnects) >= 2 and conn.connected, 10, "reconnect")
        pub = Recorder(broker, "pub-t2")

        def send() -> bool:
            pub.client.publish("dock/t2/cmd/ping", b"after restart", qos=1).wait_for_publish(5)
            return True

        assert delivered(send, got, 5) == b"after restart"
        pub.close()
    finally:
        conn.stop()


def test_wait_subscribed_knows_the_subscription_is_granted_and_forgets_it_on_a_new_connection(
    broker: Broker,
) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    conn = MqttConnection(section(broker), "dock-t3", backoff=FAST_BACKOFF)
    conn.subscribe("dock/t3/cmd/+", 1, lambda m: got.put(m.payload))
    conn.start()
    try:
        assert conn.wait_subscribed("dock/t3/cmd/+", 5)
        assert not conn.wait_subscribed("dock/t3/other", 0.2)  # never asked for
        pub = Recorder(broker, "pub-t3")  # the first message after the SUBACK arrives
        pub.client.publish("dock/t3/cmd/ping", b"first", qos=1).wait_for_publish(5)
        assert got.get(timeout=5) == b"first"
        broker.stop(kill=True)
        wait_for(lambda: not conn.connected, 5, "disconnect noticed")
        assert not conn.wait_subscribed("dock/t3/cmd/+", 0.1)  # gone with the connection
        broker.start()
        assert conn.wait_subscribed("dock/t3/cmd/+", 10)  # granted again on reconnect
        pub.close()
    finally:
        conn.stop()


def test_refused_credentials_are_not_connected_and_stop(tmp_path: Path) -> None:
    with running_broker(tmp_path / "b", users={"dock": "right"}) as broker:
        (tmp_path / "pw").write_text("wrong\n")
        alerts: list[tuple[str, str, str]] = []
        cfg = section(broker, username="dock", password_file=str(tmp_path / "pw"))
        on_alert = lambda *a: alerts.append(a)  # noqa: E731
        conn = MqttConnection(cfg, "dock-t3", on_alert=on_alert, backoff=FAST_BACKOFF)
        conn.start()
        wait_for(lambda: conn.auth_failed, 5, "auth failure")
        assert not conn.connected and not conn.wait_connected(0.5)
        assert alerts and alerts[0][0] == AUTH_ALERT and alerts[0][1] == "fault"
        assert "wrong" not in alerts[0][2]
        time.sleep(1.0)  # no-event wait: twice FAST_BACKOFF's longest delay: no second try
        log = (broker.workdir / "mosquitto.log").read_text()
        assert log.count("dock-t3") <= 2, log
        conn.stop()
        (tmp_path / "pw").write_text("right\n")
        good = MqttConnection(cfg, "dock-t3", backoff=FAST_BACKOFF)
        good.start()
        assert good.wait_connected(5)
        good.stop()


CHILD = """
import sys, time
from agent.config import MqttSection
from agent.mqtt.connection import MqttConnection
conn = MqttConnection(MqttSection(port=int(sys.argv[1])), "dock-child",
                      will=("dock/child/status", b'{"online": false}'))
conn.start()
assert conn.wait_connected(5)
conn.publish_and_wait("dock/child/status", b'{"online": true}', timeout=5, retain=True)
print("ready", flush=True)
time.sleep(60)  # bounded: the test kills this process long before
"""


def test_will_is_published_when_the_process_is_killed(broker: Broker) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(broker.port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        watcher = Recorder(broker, "watch-will", "dock/child/status")
        assert json.loads(watcher.next().payload) == {"online": True}  # the retained one
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        msg = watcher.next()
        assert json.loads(msg.payload) == {"online": False}
        late = Recorder(broker, "watch-late", "dock/child/status")
        retained = late.next()
        assert retained.retain and json.loads(retained.payload) == {"online": False}
        watcher.close()
        late.close()
    finally:
        child.kill()
        child.wait()


def test_qos1_publishes_survive_a_broker_restart(broker: Broker) -> None:
    sink = Recorder(broker, "sink-t5", "dock/t5/events", persistent=True)
    conn = MqttConnection(section(broker), "dock-t5", backoff=FAST_BACKOFF)
    conn.start()
    try:
        assert conn.wait_connected(5)
        broker.stop()  # clean stop: the broker saves the sink's session
        wait_for(lambda: not conn.connected, 5, "disconnect noticed")
        during = conn.publish("dock/t5/events", b"during outage")
        broker.start()
        assert conn.wait_connected(10)
        after = conn.publish("dock/t5/events", b"after restart")
        during.wait_for_publish(10)
        after.wait_for_publish(10)
        got = {sink.next(10).payload, sink.next(10).payload}
        assert got == {b"during outage", b"after restart"}
        assert conn.publish_failures == 0
    finally:
        conn.stop()
        sink.close()


def test_stop_publishes_the_will_as_offline(broker: Broker) -> None:
    will = ("dock/t6/status", b'{"online": false}')
    conn = MqttConnection(section(broker), "dock-t6", will=will, backoff=FAST_BACKOFF)
    conn.start()
    assert conn.wait_connected(5)
    assert conn.publish_and_wait("dock/t6/status", b'{"online": true}', timeout=5, retain=True)
    conn.stop()
    watcher = Recorder(broker, "watch-t6", "dock/t6/status")
    assert json.loads(watcher.next().payload) == {"online": False}
    watcher.close()


DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def dynsec_broker_config(
    tmp_path: Path, user: str = "dock", subscribe: tuple[str, ...] = ("dock/ok/#",)
) -> str:
    """Mosquitto's dynamic security: `user` (password `secret`) may subscribe only to the
    `subscribe` patterns and publish under dock/ (Mosquitto's acl_file grants every
    SUBSCRIBE; this plugin refuses with 0x87)."""
    path = tmp_path / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(path), "admin", "secret"],
        check=True,
        capture_output=True,
    )
    doc = json.loads(path.read_text())
    doc["roles"].append(
        {
            "rolename": "dock",
            "acls": [
                *({"acltype": "subscribePattern", "topic": t, "allow": True} for t in subscribe),
                {"acltype": "publishClientSend", "topic": "dock/#", "allow": True},
            ],
        }
    )
    admin = doc["clients"][0]
    dock = {k: admin[k] for k in ("password", "salt", "iterations")}  # the same password
    doc["clients"].append({"username": user, "roles": [{"rolename": "dock"}], **dock})
    path.write_text(json.dumps(doc))
    return f"plugin {DYNSEC}\nplugin_opt_config_file {path}\nallow_anonymous false\n"


@pytest.mark.skipif(not DYNSEC.exists(), reason="mosquitto's dynamic security plugin is missing")
def test_a_subscription_the_broker_refuses_raises_an_alert_and_others_still_work(
    tmp_path: Path,
) -> None:
    extra = dynsec_broker_config(tmp_path)
    (tmp_path / "pw").write_text("secret\n")
    with running_broker(tmp_path / "b", extra_config=extra) as broker:
        alerts: list[tuple[str, str, str]] = []
        cfg = section(broker, username="dock", password_file=str(tmp_path / "pw"))
        conn = MqttConnection(
            cfg, "dock-acl", on_alert=lambda *a: alerts.append(a), backoff=FAST_BACKOFF
        )
        got: queue.Queue[bytes] = queue.Queue()
        conn.subscribe("dock/denied/+", 1, lambda m: got.put(m.payload))
        conn.subscribe("dock/ok/+", 1, lambda m: got.put(m.payload))
        conn.start()
        try:
            wait_for(lambda: alerts, 5, "the refused subscription's alert")
            (code, severity, message) = alerts[0]
            assert (code, severity) == (SUBSCRIBE_ALERT, "error")
            assert "dock/denied/+" in message and "dock/ok" not in message
            assert list(conn.refused) == ["dock/denied/+"]
            assert conn.publish_and_wait("dock/ok/x", b"fine", 5)
            assert got.get(timeout=5) == b"fine"
            assert len(alerts) == 1, "the granted subscription raised nothing"
        finally:
            conn.stop()


def test_the_receiver_stops_on_refused_credentials_as_the_dock_does(tmp_path: Path) -> None:
    from agent.transfer.receiver.server import Receiver

    with running_broker(tmp_path / "b", users={"receiver": "right"}) as broker:
        (tmp_path / "pw").write_text("wrong\n")
        cfg = section(broker, username="receiver", password_file=str(tmp_path / "pw"))
        receiver = Receiver(tmp_path / "store", cfg, "dock-receiver-t")
        receiver.start()
        try:
            wait_for(receiver.failed.is_set, 5, "the receiver to give up")
            where = f"MQTT broker {broker.host}:{broker.port}"
            assert receiver.failure.startswith(f"{where} refused our credentials (")
            assert not receiver.wait_subscribed(0.1)
            time.sleep(2.5)  # no-event wait: past paho's first reconnect delay (1 s): no retry
            log = (broker.workdir / "mosquitto.log").read_text()
            assert log.count("dock-receiver-t") <= 2, log
        finally:
            receiver.stop()


def test_the_receiver_process_ends_on_refused_credentials_with_one_line_naming_it(
    tmp_path: Path,
) -> None:
    """`dock-agent receive` with a wrong password: exit 1 at once, the cause in one line."""
    with running_broker(tmp_path / "b", users={"receiver": "right"}) as broker:
        (tmp_path / "pw").write_text("wrong\n")
        (tmp_path / "pw").chmod(0o600)
        conf = tmp_path / "receiver.toml"
        conf.write_text(
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "receiver"\n'
            f'password_file = "{tmp_path / "pw"}"\n[receiver]\nstore_dir = "{tmp_path / "store"}"\n'
        )
        done = subprocess.run(
            [sys.executable, "-m", "agent", "receive", "-c", str(conf)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    where = f"MQTT broker {broker.host}:{broker.port} refused our credentials"
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1, done.stderr
    assert last.startswith("CRITICAL") and where in last and last.endswith("; exit 1"), last
    assert "Traceback" not in done.stderr and "wrong" not in done.stderr


@pytest.mark.skipif(not DYNSEC.exists(), reason="mosquitto's dynamic security plugin is missing")
def test_the_receiver_stops_when_the_broker_refuses_one_of_its_subscriptions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ACL grants `$file/#` but not `$file-async/#`: commands there would never arrive."""
    from agent.transfer.receiver.server import Receiver

    extra = dynsec_broker_config(tmp_path, "receiver", ("$file/#",))
    (tmp_path / "pw").write_text("secret\n")
    with running_broker(tmp_path / "b", extra_config=extra) as broker:
        cfg = section(broker, username="receiver", password_file=str(tmp_path / "pw"))
        receiver = Receiver(tmp_path / "store", cfg, "receiver")
        receiver.start()
        try:
            wait_for(receiver.failed.is_set, 10, "the receiver to stop")
            assert not receiver.wait_subscribed(0.1)
        finally:
            receiver.stop()
    where = f"MQTT broker {broker.host}:{broker.port}"
    assert receiver.failure.startswith(f"{where} refused the subscription to $file-async/# ("), (
        receiver.failure
    )
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [e for e in errors if "$file-async/#" in e], errors
    assert not [e for e in errors if "subscription to $file/#" in e], "the granted one is fine"
