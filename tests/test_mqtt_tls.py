"""MqttConnection over TLS against a real Mosquitto: server TLS, mutual TLS, password from a file.

A throwaway PKI is made with the openssl CLI (EC P-256): a CA, a server certificate for
127.0.0.1/localhost, one for another name, a client certificate, and a second, unrelated CA.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import MqttSection
from agent.mqtt.connection import AUTH_ALERT, MqttConnection
from agent.schema import ConfigError
from tests.broker import Broker, free_port, mosquitto_binary, running_broker
from tests.mqtt_helpers import FAST_BACKOFF, Recorder, wait_for

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("openssl") is None,
    reason="mosquitto or openssl is not installed",
)

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = dock-agent test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
subjectAltName = IP:127.0.0.1, DNS:localhost
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
[elsewhere]
basicConstraints = critical, CA:FALSE
subjectAltName = DNS:elsewhere.example
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
PASSWORD = "s3cret-Pw-42"
STAYS_DOWN_S = 1.5


def _openssl(pki: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)


def _make_ca(pki: Path, name: str) -> None:
    _openssl(pki, "req", "-x509", *EC_KEY, "-subj", f"/CN={name}", *_out(name, "crt"),
             *"-days 2 -config openssl.cnf -extensions ca".split())  # fmt: skip


def _make_cert(pki: Path, name: str, ext: str, ca: str = "ca") -> None:
    _openssl(pki, "req", "-new", *EC_KEY, "-subj", f"/CN={name}", "-config", "openssl.cnf",
             *_out(name, "csr"))  # fmt: skip
    _openssl(pki, *f"x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -days 2".split(),
             "-set_serial", str(time.time_ns()), "-extfile", "openssl.cnf", "-extensions", ext,
             "-out", f"{name}.crt")  # fmt: skip


def _out(name: str, kind: str) -> list[str]:
    return ["-keyout", f"{name}.key", "-out", f"{name}.{kind}"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, other-ca; server (127.0.0.1, localhost), elsewhere (another name), client."""
    d = tmp_path_factory.mktemp("pki")
    (d / "openssl.cnf").write_text(OPENSSL_CNF)
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    for name in ("server", "elsewhere", "client"):
        _make_cert(d, name, name)
    return d


def tls_listener(pki: Path, port: int, server: str = "server", mutual: bool = False) -> str:
    """Mosquitto config lines for a TLS listener on 127.0.0.1:`port`."""
    return (
        f"listener {port} 127.0.0.1\ncafile {pki}/ca.crt\n"
        f"certfile {pki}/{server}.crt\nkeyfile {pki}/{server}.key\n"
        f"require_certificate {'true' if mutual else 'false'}\n"
    )


@dataclass
class TlsBroker:
    """One anonymous Mosquitto: plain `broker.port` plus three TLS listeners."""

    broker: Broker
    tls: int  # server TLS, certificate for 127.0.0.1/localhost
    mutual: int  # the same, and clients must present a certificate of our CA
    elsewhere: int  # a certificate of our CA, but for another host name


@pytest.fixture(scope="module")
def tls_broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    tls, mutual, elsewhere = free_port(), free_port(), free_port()
    extra = (
        tls_listener(pki, tls)
        + tls_listener(pki, mutual, mutual=True)
        + tls_listener(pki, elsewhere, server="elsewhere")
    )
    with running_broker(tmp_path_factory.mktemp("tls-broker"), extra_config=extra) as b:
        yield TlsBroker(b, tls, mutual, elsewhere)


def tls_section(port: int, pki: Path, ca: str = "ca", **kw: Any) -> MqttSection:
    """An [mqtt] section with TLS to 127.0.0.1:`port`, trusting `ca`."""
    kw.setdefault("host", "127.0.0.1")
    return MqttSection(port=port, tls_ca=str(pki / f"{ca}.crt"), **kw)


def assert_stays_down(conn: MqttConnection) -> None:
    """`conn` keeps failing (without crashing) for STAYS_DOWN_S seconds."""
    deadline = time.monotonic() + STAYS_DOWN_S
    while time.monotonic() < deadline:
        assert not conn.connected
        time.sleep(0.05)
    assert not conn.auth_failed
    assert conn.client._thread is not None and conn.client._thread.is_alive()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_connects_and_delivers_qos1(tls_broker: TlsBroker, pki: Path, host: str) -> None:
    sub = Recorder(tls_broker.broker, f"sub-tls-{host}", "dock/tls/events")
    conn = MqttConnection(
        tls_section(tls_broker.tls, pki, host=host), "dock-tls", backoff=FAST_BACKOFF
    )
    conn.start()
    try:
        assert conn.wait_connected(5)
        assert conn.publish_and_wait("dock/tls/events", b"over tls", timeout=5, qos=1)
        msg = sub.next()
        assert (msg.payload, msg.qos) == (b"over tls", 1)
    finally:
        conn.stop()
        sub.close()


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agent.mqtt.connection"]


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host_name"])
def test_untrusted_server_is_never_connected_and_retried(
    tls_broker: TlsBroker, pki: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.mqtt.connection")
    if case == "wrong_ca":
        cfg = tls_section(tls_broker.tls, pki, ca="other-ca")
    else:
        cfg = tls_section(tls_broker.elsewhere, pki)
    conn = MqttConnection(cfg, f"dock-{case}", backoff=FAST_BACKOFF)
    conn.start()
    try:
        assert_stays_down(conn)
    finally:
        conn.stop()
    failures = _failures(caplog)
    assert len(failures) >= 3, "the reconnect policy should keep trying with backoff"
    assert "CERTIFICATE_VERIFY_FAILED" in failures[0].getMessage()


def test_mutual_tls_needs_the_client_certificate(
    tls_broker: TlsBroker, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.mqtt.connection")
    anonymous = MqttConnection(
        tls_section(tls_broker.mutual, pki), "dock-nocert", backoff=FAST_BACKOFF
    )
    anonymous.start()
    try:
        assert_stays_down(anonymous)
    finally:
        anonymous.stop()
    assert "before answering CONNECT" in _failures(caplog)[0].getMessage()
    cfg = tls_section(
        tls_broker.mutual, pki, tls_cert=str(pki / "client.crt"), tls_key=str(pki / "client.key")
    )
    conn = MqttConnection(cfg, "dock-mtls", backoff=FAST_BACKOFF)
    conn.start()
    try:
        assert conn.wait_connected(5)
        assert conn.publish_and_wait("dock/mtls/events", b"mutual", timeout=5)
    finally:
        conn.stop()


@pytest.fixture
def auth_broker(pki: Path, tmp_path: Path) -> Iterator[tuple[Broker, int]]:
    """A Mosquitto that admits only user `dock` with PASSWORD; a TLS listener too."""
    port = free_port()
    with running_broker(
        tmp_path / "auth-broker", users={"dock": PASSWORD}, extra_config=tls_listener(pki, port)
    ) as b:
        yield b, port


def test_password_file_over_tls(
    auth_broker: tuple[Broker, int], pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "mqtt.pw").write_text(PASSWORD + "\n")
    cfg = tls_section(auth_broker[1], pki, username="dock", password_file=str(tmp_path / "mqtt.pw"))
    conn = MqttConnection(cfg, "dock-pw", backoff=FAST_BACKOFF)
    conn.start()
    try:
        assert conn.wait_connected(5)
        assert conn.publish_and_wait("dock/pw/events", b"authenticated", timeout=5)
    finally:
        conn.stop()
    assert PASSWORD not in caplog.text


def test_password_from_systemd_credentials_directory(
    auth_broker: tuple[Broker, int],
    pki: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORD)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = tls_section(auth_broker[1], pki, username="dock", password_file="mqtt-password")
    conn = MqttConnection(cfg, "dock-cred", backoff=FAST_BACKOFF)
    conn.start()
    try:
        assert conn.wait_connected(5)
    finally:
        conn.stop()


def test_wrong_password_over_tls_fails_once_and_is_not_logged(
    auth_broker: tuple[Broker, int], pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-Password-7"
    (tmp_path / "mqtt.pw").write_text(wrong)
    alerts: list[tuple[str, str, str]] = []
    cfg = tls_section(auth_broker[1], pki, username="dock", password_file=str(tmp_path / "mqtt.pw"))
    conn = MqttConnection(
        cfg, "dock-badpw", on_alert=lambda *a: alerts.append(a), backoff=FAST_BACKOFF
    )
    conn.start()
    try:
        wait_for(lambda: conn.auth_failed, 5, "auth failure")
        time.sleep(1.0)  # no-event wait: twice FAST_BACKOFF's longest delay: no second attempt
        assert not conn.connected
        assert [a[0] for a in alerts] == [AUTH_ALERT]
    finally:
        conn.stop()
    log = (auth_broker[0].workdir / "mosquitto.log").read_text()
    assert log.count("dock-badpw") <= 2, log
    assert wrong not in caplog.text and wrong not in alerts[0][2]


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("tls_ca", "missing", "mqtt.tls_ca = "),
        ("tls_key", "missing", "mqtt.tls_key = "),
        ("password_file", "missing", "mqtt.password_file = "),
        ("tls_key", "server.key", "mqtt.{tls_ca,tls_cert,tls_key}: not usable"),  # not the cert's
        ("tls_ca", "openssl.cnf", "mqtt.{tls_ca,tls_cert,tls_key}: not usable"),  # not PEM
    ],
)
def test_unusable_files_are_a_config_error_naming_the_key(
    pki: Path, tmp_path: Path, key: str, value: str, needle: str
) -> None:
    (tmp_path / "pw").write_text(PASSWORD)
    files: dict[str, Any] = {
        "tls_ca": str(pki / "ca.crt"),
        "tls_cert": str(pki / "client.crt"),
        "tls_key": str(pki / "client.key"),
        "password_file": str(tmp_path / "pw"),
    }
    files[key] = str(tmp_path / "missing") if value == "missing" else str(pki / value)
    with pytest.raises(ConfigError) as err:
        MqttConnection(MqttSection(username="dock", **files), "dock-unusable")
    assert needle in str(err.value) and files[key] in str(err.value)
