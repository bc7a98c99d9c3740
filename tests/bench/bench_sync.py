"""SPEC 10: sync of one clip through Mosquitto on loopback to `dock-agent receive`, vs bare paho.

Baseline (as SPEC 10 words it): one paho MQTT v5 client publishes the clip's segments, the same
`SEGMENT`-byte payloads on the same `{prefix}/{file_id}/{offset}/{sha256}` topics, at QoS 1 to
the same Mosquitto, with at most `WINDOW` publishes awaiting their PUBACK (a semaphore released
in `on_publish`, i.e. paho's `max_inflight_messages_set(WINDOW)`). Nothing subscribes, so the
broker acknowledges and drops each message; the publishes carry no Response Topic or
Correlation Data; segment hashes are computed before the clock starts. The measured side is
`FileSender` with the same segment size and window (of unanswered file-transfer commands) to
`dock-agent receive` in its own process: init, segments answered after the receiver checked
their SHA-256, and fin answered once the file is verified and durable.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttSection
from agent.mqtt.connection import MqttConnection
from agent.transfer import protocol as p
from agent.transfer.sender import FileSender, SendSettings
from agent.transfer.signing import Signer
from agent.trust import keys
from tests.bench import Row
from tests.bench.stored import NotStored, sha256_file
from tests.bench.sync_mix import mix_row
from tests.bench.sync_uplink import uplink_row
from tests.broker import running_broker
from tests.paho_link import PahoLink

REPO = Path(__file__).resolve().parents[2]
SEGMENT, WINDOW = MqttSection().segment_bytes, MqttSection().max_inflight  # the defaults
MIB = 1 << 20


def make_clip(path: Path, size: int) -> str:
    """A random clip of `size` bytes; returns its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(size // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def connect(port: int, client_id: str) -> tuple[mqtt.Client, PahoLink]:
    """A plain paho v5 client on the loopback broker, started."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    link = PahoLink(client)
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not link.wait_connected(10):
        raise RuntimeError("benchmark client could not connect")
    return client, link


def dock_connection(port: int, client_id: str) -> MqttConnection:
    """The dock's own MQTT connection (agent.mqtt.connection, as the daemon sends), started."""
    conn = MqttConnection(MqttSection(host="127.0.0.1", port=port), client_id, session_expiry_s=0)
    conn.start()
    if not conn.wait_connected(10):
        raise RuntimeError("the dock's connection could not connect")
    return conn


def bare_publish(port: int, clip: Path, size: int, file_id: str) -> float:
    """Seconds for a bare paho QoS 1 publisher to send the same segments, `WINDOW` unacked."""
    offsets = range(0, size, SEGMENT)
    with open(clip, "rb") as fh:
        topics = [
            p.segment_topic("$file", file_id, o, p.sha256_hex(fh.read(SEGMENT))) for o in offsets
        ]
    client, _ = connect(port, "bare-publisher")
    window = threading.Semaphore(WINDOW)
    client.on_publish = lambda *_a: window.release()
    fd = os.open(clip, os.O_RDONLY)
    try:
        started = time.monotonic()
        for offset, topic in zip(offsets, topics, strict=True):
            window.acquire()
            client.publish(topic, os.pread(fd, SEGMENT, offset), qos=1)
        for _ in range(WINDOW):
            window.acquire()
        return time.monotonic() - started
    finally:
        os.close(fd)
        client.disconnect()
        client.loop_stop()


DRAIN = """
import sys, threading, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
want, seen, done = int(sys.argv[2]), [0], threading.Event()
def on_message(c, u, m):
    seen[0] += 1
    if seen[0] >= want:
        done.set()
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-drain", protocol=mqtt.MQTTv5)
c.on_connect = lambda c, u, f, rc, p: c.subscribe("$file/#", 1)
c.on_subscribe = lambda *a: print("ready", flush=True)
c.on_message = on_message
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
done.wait(600)
print("done", flush=True)
"""


def drained_publish(port: int, clip: Path, size: int, file_id: str) -> float:
    """Seconds until a bare paho QoS 1 subscriber has received every segment (same window)."""
    count = len(range(0, size, SEGMENT))
    drain = subprocess.Popen(
        [sys.executable, "-c", DRAIN, str(port), str(count)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert drain.stdout is not None and drain.stdout.readline().strip() == "ready"
        started = time.monotonic()
        bare_publish(port, clip, size, file_id)
        assert drain.stdout.readline().strip() == "done"
        return time.monotonic() - started
    finally:
        drain.kill()
        drain.wait(10)


def keyed(
    workdir: Path, client_id: str = "dock-bench", dock: Ed25519PrivateKey | None = None
) -> tuple[str, Signer]:
    """SPEC 11 as shipped: the receiver knows the dock's key and signs receipts the dock checks.

    Returns the receiver's [receiver] lines and the dock's Signer (the dock's key pair made here
    unless given, central's made here).
    """
    dock = dock or Ed25519PrivateKey.generate()
    keys_dir = workdir / "dock-keys"
    keys_dir.mkdir(exist_ok=True)
    keys.write_public(keys_dir / f"{client_id}.pub", dock.public_key(), client_id)
    central = keys.create_private(workdir / "receiver.key")
    extra = f'dock_keys_dir = "{keys_dir}"\nsigning_key_file = "{workdir / "receiver.key"}"\n'
    return extra, Signer(client_id, dock, central.public_key())


def start_receiver(
    workdir: Path, store: Path, port: int, extra: str = ""
) -> subprocess.Popen[bytes]:
    """`dock-agent receive` (its command module) in its own process; `extra` goes in [receiver]."""
    conf = workdir / "receiver.toml"
    conf.write_text(f'[receiver]\nstore_dir = "{store}"\n{extra}[mqtt]\nport = {port}\n')
    code = (
        "import argparse, sys; from agent.commands import receive; "
        f"sys.exit(receive.run(argparse.Namespace(config={str(conf)!r})))"
    )
    log = open(workdir / "receiver.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log, stderr=log)


def synced_send(
    port: int, workdir: Path, clip: Path, size: int, file_id: str, signer: Signer
) -> float:
    """Seconds for FileSender to deliver the clip to the receiver (fin acknowledged, receipted)."""
    link = dock_connection(port, "dock-bench")
    try:
        warm = SendSettings(ack_timeout_s=1.0, max_tries=20)
        sender = FileSender(link, "dock-bench", workdir / "state", warm, signer)
        tiny = workdir / "warmup.bin"
        tiny.write_bytes(b"warm-up")
        digest = hashlib.sha256(b"warm-up").hexdigest()
        sender.send(tiny, digest, "warmup.bin", 7, {})  # also waits for the receiver to be up
        sender.settings = SendSettings(segment_bytes=SEGMENT, max_inflight=WINDOW)
        started = time.monotonic()
        sender.send(clip, file_id, "clip.mp4", size, {"sha256": file_id})
        return time.monotonic() - started
    finally:
        link.stop()


def received_ok(store: Path, file_id: str) -> bool:
    """True when the receiver holds the clip with the right SHA-256; NotStored otherwise."""
    held = store / "dock-bench" / file_id / "clip.mp4"
    if not held.is_file():
        raise NotStored(f"the receiver holds no {held}: the send is not timed as a sync")
    if sha256_file(held) != file_id:
        raise NotStored(f"the receiver's {held} differs from the clip sent")
    return True


def measure(workdir: Path, size: int, stores: dict[str, Path]) -> dict[str, Any]:
    """Baseline seconds, and file-transfer seconds into each receiver store."""
    clip = workdir / "clip.mp4"
    file_id = make_clip(clip, size)
    got: dict[str, Any] = {}
    with running_broker(workdir / "broker") as broker:
        got["bare"] = bare_publish(broker.port, clip, size, file_id)
        got["drained"] = drained_publish(broker.port, clip, size, file_id)
        for label, store in stores.items():
            run_dir = workdir / label
            run_dir.mkdir()
            extra, signer = keyed(run_dir)
            receiver = start_receiver(run_dir, store, broker.port, extra)
            try:
                got[label] = synced_send(broker.port, run_dir, clip, size, file_id, signer)
            finally:
                receiver.terminate()
                receiver.wait(30)
            got[f"{label}_ok"] = received_ok(store, file_id)
    return got


def _row(size: int, bare_rate: float, seconds: float, intact: bool, where: str) -> Row:
    rate = size / seconds / MIB
    ratio = rate / bare_rate
    return Row(
        what=f"sync of a {size // MIB} MiB clip through Mosquitto on loopback to the receiver "
        f"(store on {where})",
        target="≥ 0.5 × a bare paho QoS 1 publisher of the same segments, same window",
        baseline=f"bare paho QoS 1, {SEGMENT // 1024} KiB × window {WINDOW} (PUBACKs), "
        f"no subscriber: {bare_rate:.0f} MiB/s",
        measured=(
            f"init + segments + fin acked durably: {rate:.0f} MiB/s ({seconds:.2f} s); "
            f"receiver copy sha256 {'matches' if intact else 'DIFFERS'}"
        ),
        ratio=ratio,
        ok=ratio >= 0.5 and intact,
    )


def run(quick: bool) -> list[Row]:
    """The sync rows of SPEC 10: loopback (store on disk, on tmpfs, vs a drained publisher),
    the uplink and the docking's mix."""
    return [*run_loopback(quick), *run_uplink(quick), *run_mix(quick)]


def run_loopback(quick: bool) -> list[Row]:
    """The loopback rows alone (`python -m tests.bench --only sync:loopback`): receiver store
    on disk, and on tmpfs (no disk in the way), and the disk run vs a drained publisher."""
    size = (64 if quick else 256) * MIB
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        stores = {"disk": Path(tmp) / "store"}
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(
            prefix="bench-sync-", dir=shm if shm.is_dir() else tmp
        ) as mem:
            stores["tmpfs"] = Path(mem) / "store"
            got = measure(Path(tmp), size, stores)
    bare_rate = size / got["bare"] / MIB
    rows = [_row(size, bare_rate, got[k], got[f"{k}_ok"], k) for k in stores]
    drained = _drained_row(size, size / got["drained"] / MIB, got["disk"])
    return [*rows, drained]


def run_uplink(quick: bool) -> list[Row]:
    """The uplink row alone (`python -m tests.bench --only sync:uplink`)."""
    size = (16 if quick else 256) * MIB  # a real clip is 0.5 to 4 GB
    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        return [uplink_row(Path(tmp), clip, size, make_clip(clip, size), SEGMENT, WINDOW)]


def run_mix(quick: bool) -> list[Row]:
    """The docking's mix over the uplink alone (`python -m tests.bench --only sync:mix`)."""
    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        return [mix_row(Path(tmp))]  # the same ten clips with --quick: a docking is that small


def _drained_row(size: int, drained_rate: float, seconds: float) -> Row:
    """SPEC 10: the same sync vs a bare publisher whose segments a bare subscriber drains."""
    rate = size / seconds / MIB
    return Row(
        what=f"sync of a {size // MIB} MiB clip through a real Mosquitto to `dock-agent receive`, "
        "both on loopback (store on disk)",
        target="≥ 0.5 × a bare paho QoS 1 publisher whose segments a bare paho subscriber drains",
        baseline=f"bare paho QoS 1 publisher -> Mosquitto -> bare paho QoS 1 subscriber: "
        f"{drained_rate:.0f} MiB/s",
        measured=f"{rate:.0f} MiB/s",
        ratio=rate / drained_rate,
        ok=rate / drained_rate >= 0.5,
    )
