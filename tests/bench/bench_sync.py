"""SPEC 10: sync of one clip through Mosquitto on loopback to `dock-agent receive`, vs bare paho."""

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
from paho.mqtt.enums import CallbackAPIVersion

from agent.transfer import protocol as p
from agent.transfer.link import PahoLink
from agent.transfer.sender import FileSender, SendSettings
from tests.bench import Row
from tests.broker import running_broker

REPO = Path(__file__).resolve().parents[2]
SEGMENT, WINDOW = 262144, 16
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


def start_receiver(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """`dock-agent receive` (its command module) in its own process."""
    conf = workdir / "receiver.toml"
    conf.write_text(f'[receiver]\nstore_dir = "{workdir / "store"}"\n[mqtt]\nport = {port}\n')
    code = (
        "import argparse, sys; from agent.commands import receive; "
        f"sys.exit(receive.run(argparse.Namespace(config={str(conf)!r})))"
    )
    log = open(workdir / "receiver.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log, stderr=log)


def synced_send(port: int, workdir: Path, clip: Path, size: int, file_id: str) -> float:
    """Seconds for FileSender to deliver the clip to the receiver (fin acknowledged)."""
    client, link = connect(port, "dock-bench")
    try:
        warm = SendSettings(ack_timeout_s=1.0, max_tries=20)
        sender = FileSender(link, "dock-bench", workdir / "state", warm)
        tiny = workdir / "warmup.bin"
        tiny.write_bytes(b"warm-up")
        digest = hashlib.sha256(b"warm-up").hexdigest()
        sender.send(tiny, digest, "warmup.bin", 7, {})  # also waits for the receiver to be up
        sender.settings = SendSettings(segment_bytes=SEGMENT, max_inflight=WINDOW)
        started = time.monotonic()
        sender.send(clip, file_id, "clip.mp4", size, {"sha256": file_id})
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


def received_ok(workdir: Path, file_id: str) -> bool:
    """True when the receiver holds the clip with the right SHA-256."""
    held = workdir / "store" / "dock-bench" / file_id / "clip.mp4"
    digest = hashlib.sha256()
    with open(held, "rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest() == file_id


def measure(workdir: Path, size: int) -> dict[str, Any]:
    """Baseline and file-transfer seconds for one clip of `size` bytes."""
    clip = workdir / "clip.mp4"
    file_id = make_clip(clip, size)
    with running_broker(workdir / "broker") as broker:
        bare = bare_publish(broker.port, clip, size, file_id)
        receiver = start_receiver(workdir, broker.port)
        try:
            synced = synced_send(broker.port, workdir, clip, size, file_id)
        finally:
            receiver.terminate()
            receiver.wait(30)
    return {"bare": bare, "synced": synced, "intact": received_ok(workdir, file_id)}


def run(quick: bool) -> list[Row]:
    """The sync row of SPEC 10."""
    size = (64 if quick else 256) * MIB
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        got = measure(Path(tmp), size)
    bare_rate, synced_rate = size / got["bare"] / MIB, size / got["synced"] / MIB
    ratio = synced_rate / bare_rate
    return [
        Row(
            what=f"sync of a {size // MIB} MiB clip through Mosquitto on loopback to the receiver",
            target="≥ 0.5 × a bare paho QoS 1 publisher of the same segments, same window",
            baseline=f"bare paho QoS 1, 256 KiB × window {WINDOW}: {bare_rate:.0f} MiB/s",
            measured=(
                f"init + segments + fin acked durably: {synced_rate:.0f} MiB/s "
                f"({got['synced']:.2f} s); receiver copy sha256 "
                f"{'matches' if got['intact'] else 'DIFFERS'}"
            ),
            ratio=ratio,
            ok=ratio >= 0.5 and bool(got["intact"]),
        )
    ]
