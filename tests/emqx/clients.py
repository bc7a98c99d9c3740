"""Clients that send a file exactly as EMQX's two sample file-transfer clients do, on the wire.

- `examples_client`: emqx/MQTT-Client-Examples `mqtt-client-Python3/file_transfer.py`.
  `$file/{id}/init` with {"name", "size"} (no checksum, expire_at or user_data); after its
  PUBACK every segment `$file/{id}/{offset}` (no segment checksum); after the last segment's
  PUBACK `$file/{id}/fin/{size}/{sha256 hex}`; after that PUBACK it disconnects.
- `emqx_ft_client`: emqx/emqx-ft `src/emqx_ft/main.py`. Publishes init {"name", "size",
  "checksum"}, every segment and `fin/{size}` (no checksum) at once, under `$file/{id}` or, with
  `use_async`, `$file-async/{id}`; session expiry 120 s; disconnects on the fin's PUBACK.

Neither sets a Response Topic or Correlation Data nor subscribes to any answer: on Mosquitto
they only learn that the broker took each publish. The file id is whatever the user typed
(`my-file-001`). They use paho's version-1 callbacks, as the samples (written for paho 1.x) do.
Each returns what it sent once the client has disconnected.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Sent:
    """What a sample client published, in order."""

    client_id: str
    file_id: str
    name: str
    sha256: str
    topics: list[str] = field(default_factory=list)
    init_payload: bytes = b""


def examples_client(
    host: str,
    port: int,
    path: Path,
    file_id: str,
    client_id: str = "python-mqtt-file-transfer-1",
    file_name: str | None = None,
    segment_size: int = 1024,
    timeout: float = 30.0,
) -> Sent:
    """Send `path` as MQTT-Client-Examples' file_transfer.py does (its defaults kept)."""
    data = path.read_bytes()
    if not data:  # the sample's "segments" stage has no message to wait for: it never ends
        raise ValueError("file_transfer.py cannot send an empty file")
    name = file_name or os.path.basename(path)
    meta = {"name": name, "size": os.stat(path).st_size}
    sent = Sent(client_id, file_id, name, hashlib.sha256(data).hexdigest())
    stages: dict[int, str] = {}  # PUBACK of this mid -> the next stage
    done = threading.Event()
    client = _v1_client(client_id)

    def publish(topic: str, payload: bytes | str = b"") -> int:
        sent.topics.append(topic)
        return client.publish(topic, payload=payload, qos=1).mid

    def stage(step: str) -> None:
        if step == "init":
            payload = json.dumps(meta)
            sent.init_payload = payload.encode()
            stages[publish(f"$file/{file_id}/init", payload)] = "segments"
        elif step == "segments":
            mid, offset = 0, 0
            for offset in range(0, len(data), segment_size):
                mid = publish(f"$file/{file_id}/{offset}", data[offset : offset + segment_size])
            stages[mid] = "fin"
        elif step == "fin":
            stages[publish(f"$file/{file_id}/fin/{len(data)}/{sent.sha256}")] = "close"
        else:
            client.disconnect()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc == 0 and c.is_connected() and not stages:
            stage("init")

    def on_publish(_c: mqtt.Client, _u: Any, mid: int) -> None:
        if mid in stages:
            stage(stages[mid])

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = _on_disconnect(done)
    client.connect(host, port, keepalive=120)
    return _run(client, done, sent, timeout)


def emqx_ft_client(
    host: str,
    port: int,
    path: Path,
    file_id: str,
    client_id: str,
    file_name: str | None = None,
    segment_size: int = 1024,
    use_async: bool = False,
    session_expiry_interval: int = 120,
    timeout: float = 30.0,
) -> Sent:
    """Send `path` as emqx-ft does (`--async` = `use_async`).

    As in the sample, the name is `file_name` else the path exactly as given (slashes and all),
    so pass `file_name` unless that is what the test is about.
    """
    data = path.read_bytes()
    checksum = hashlib.sha256(data).hexdigest()
    name = file_name or str(path)
    meta = {"name": name, "size": len(data), "checksum": checksum}
    prefix = f"$file-async/{file_id}" if use_async else f"$file/{file_id}"
    sent = Sent(client_id, file_id, name, checksum)
    done = threading.Event()
    client = _v1_client(client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_interval
    client.connect(host, port, 60, properties=props)
    sent.init_payload = json.dumps(meta).encode()
    messages: list[tuple[str, bytes | str]] = [(f"{prefix}/init", json.dumps(meta))]
    messages += [
        (f"{prefix}/{o}", data[o : o + segment_size]) for o in range(0, len(data), segment_size)
    ]
    messages.append((f"{prefix}/fin/{len(data)}", ""))
    last = 0
    for topic, payload in messages:
        sent.topics.append(topic)
        last = client.publish(topic, payload, qos=1).mid

    def on_publish(c: mqtt.Client, _u: Any, mid: int) -> None:
        if mid == last:
            c.disconnect()

    client.on_publish = on_publish
    client.on_disconnect = _on_disconnect(done)
    return _run(client, done, sent, timeout)


def _v1_client(client_id: str) -> mqtt.Client:
    """A paho client with the version-1 callbacks the samples were written for."""
    with warnings.catch_warnings():  # deprecated in paho 2, and exactly what the samples use
        warnings.simplefilter("ignore", DeprecationWarning)
        return mqtt.Client(CallbackAPIVersion.VERSION1, client_id=client_id, protocol=mqtt.MQTTv5)


def _on_disconnect(done: threading.Event) -> Any:
    """A version-1 on_disconnect that marks the client's own, clean disconnect."""

    def on_disconnect(_c: mqtt.Client, _u: Any, rc: Any, _p: Any = None) -> None:
        if rc == 0:
            done.set()

    return on_disconnect


def _run(client: mqtt.Client, done: threading.Event, sent: Sent, timeout: float) -> Sent:
    """Run the client's loop until it disconnects by itself (the samples' loop_forever)."""
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise AssertionError(f"{sent.client_id} did not finish sending in {timeout} s")
    finally:
        client.loop_stop()
    return sent
