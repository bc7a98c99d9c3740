"""SPEC 10: a docking's mix over a station's uplink (40 Mbit/s, 40 ms round trip, linkproxy).

Ten clips as one docking leaves them: nine of 0.1 to 2 MB (sizes spread evenly) and one of
40 MB, real files of random bytes, with a real custody log holding each clip's
`clip_offloaded` entry. They go as the daemon sends them: in order on the sync worker's lanes
(agent/sync/lanes.py, the same class), each lane delivering the custody chunk covering its
clip's entry (the same ChainPacer, one chunk sender at a time), then the clip and its manifest
file at once (agent/sync/delivery.py, the same class), all through one FileSender (one window)
to `dock-agent receive` beside Mosquitto.
Timed from the first init to the last fin; every clip must be held by the receiver with its
SHA-256 and central must hold the chain to the last clip's entry, else the row fails.
The proxy counts the seconds its dock-to-broker bottleneck idled meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.pacer import ChainPacer
from agent.chain.upload import ChainUpload
from agent.evidence.custody import CustodyLog
from agent.sync.delivery import Delivery
from agent.sync.lanes import LANES, Lanes
from agent.sync.parcel import Parcels
from tests.bench import Row
from tests.bench.linkproxy import LinkProxy, raw_rate
from tests.bench.stored import NotStored, sha256_file
from tests.bench.sync_uplink import RATE, RTT, _manifest, measured_rtt, warm_sender
from tests.broker import running_broker

MB = 1_000_000
BIG_AT = 3  # the 40 MB clip's place in the send order


def mix_sizes() -> list[int]:
    """Nine clips of 0.1 to 2 MB, evenly spread, and one of 40 MB (fourth in send order)."""
    small = [round((0.1 + 1.9 * i / 8) * MB) for i in range(9)]
    return [*small[:BIG_AT], 40 * MB, *small[BIG_AT:]]


def make_mix(workdir: Path) -> list[dict[str, Any]]:
    """The clips as files and index-like records (clip_id, file_name, size, local_path)."""
    records = []
    for n, size in enumerate(mix_sizes(), start=1):
        path = workdir / "clips" / f"clip{n:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        records.append(
            {
                "clip_id": hashlib.sha256(data).hexdigest(),
                "file_name": path.name,
                "size": size,
                "local_path": str(path),
            }
        )
    return records


def custody_log(workdir: Path, records: list[dict[str, Any]]) -> Path:
    """A docking's custody log; each record gets its `clip_offloaded` entry's seq."""
    path = workdir / "data" / "custody.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    log = CustodyLog(path)
    try:
        log.append("docked", device_id="ZFY0012345", bay=1)
        for r in records:
            entry = log.append(
                "clip_offloaded",
                device_id="ZFY0012345",
                file=r["file_name"],
                sha256=r["clip_id"],
                size=r["size"],
            )
            r["custody_seq"] = int(entry["seq"])
        log.append("offload_complete", device_id="ZFY0012345", bay=1)
    finally:
        log.close()
    return path


@dataclasses.dataclass
class MixRun:
    seconds: float
    idle_s: float  # the uplink's dock-to-broker bottleneck idle within `seconds`
    chunks: int
    delivered: int


def mix_send(workdir: Path, records: list[dict[str, Any]], lanes: int = LANES) -> MixRun:
    """Deliver the docking through the proxy as the sync worker's lanes do; timed."""
    from tests.bench.bench_sync import SEGMENT, WINDOW, connect, keyed, start_receiver

    store = workdir / "store"
    dock_key = Ed25519PrivateKey.generate()
    log = custody_log(workdir, records)
    delivered: list[str] = []
    with running_broker(workdir / "broker") as broker:
        extra, signer = keyed(workdir, dock=dock_key)
        receiver = start_receiver(workdir, store, broker.port, extra)
        proxy = LinkProxy((broker.host, broker.port), RATE, RTT)
        client, link = connect(proxy.port, "dock-bench")
        try:
            sender = warm_sender(link, workdir, signer, SEGMENT, WINDOW)
            parcels = Parcels(workdir / "manifests")
            chunks: list[int] = []

            def send_chunk(path: Path, *args: Any, **kw: Any) -> Any:
                chunks.append(path.stat().st_size)
                return sender.send(path, *args, **kw)

            upload = ChainUpload(log, "dock-bench", dock_key, workdir / "chain", send_chunk)
            pacer = ChainPacer(upload, 3600.0)

            delivery = Delivery(
                sender, pacer, parcels, "dock-bench", lambda r: _manifest(r["clip_id"], r["size"])
            )

            def deliver(r: dict[str, Any]) -> None:  # the sync worker's delivery, the same class
                delivery(r)
                delivered.append(r["clip_id"])

            wake = threading.Event()
            pool = Lanes(lanes, deliver, wake.set, name="bench-lane")
            pool.start()
            idle_before = proxy.upstream_idle()
            started = time.monotonic()
            for r in records:  # as Sync._run: the next clip in order on the next free lane
                _until(wake, pool.free)
                pool.submit(r)
            _until(wake, lambda: not pool.busy())
            seconds = time.monotonic() - started
            idle = proxy.upstream_idle() - idle_before
            pool.stop(10)
        finally:
            client.disconnect()
            client.loop_stop()
            proxy.close()
            receiver.terminate()
            receiver.wait(30)
    for r in records:
        held = store / "dock-bench" / r["clip_id"] / r["file_name"]
        if not held.is_file() or sha256_file(held) != r["clip_id"]:
            raise NotStored(f"the receiver's {held} is missing or differs: the mix is not timed")
    last = max(r["custody_seq"] for r in records)
    if upload.held_seq < last:
        raise NotStored(f"central holds the custody chain to seq {upload.held_seq}, not {last}")
    return MixRun(seconds, idle, len(chunks), len(delivered))


def _until(wake: threading.Event, ready: Any) -> None:
    """Wait until `ready()`, woken when a lane ends (at most 1 s between looks)."""
    while True:
        wake.clear()
        if ready():
            return
        wake.wait(1.0)


def mix_row(workdir: Path) -> Row:
    """The SPEC 10 row: a docking's mix over the uplink."""
    raw = raw_rate(RATE, RTT)
    rtt = measured_rtt(RATE)
    records = make_mix(workdir)
    total = sum(r["size"] for r in records)
    run = mix_send(workdir, records)
    rate = total / run.seconds
    ratio = rate / RATE
    ok = ratio >= 0.9 and run.delivered == len(records)
    return Row(
        what=f"sync of a docking's mix ({len(records)} clips: nine of 0.1-2 MB, one of 40 MB; "
        f"{total / MB:.1f} MB) over a 40 Mbit/s, 40 ms RTT uplink (TCP proxy in the benchmark) "
        f"through Mosquitto to the receiver, {LANES} lanes",
        target="clip bytes acked per second ≥ 0.9 × the proxy's rate, manifests, receipts and "
        "custody chunks included",
        baseline=f"proxy {RATE * 8 / 1e6:.0f} Mbit/s = {RATE / 1e6:.2f} MB/s; measured through "
        f"it: one raw TCP stream {raw / 1e6:.2f} MB/s, round trip {rtt * 1000:.0f} ms",
        measured=f"{run.chunks} custody chunk(s) + {run.delivered} clips + their manifest files "
        f"acked: {rate / 1e6:.2f} MB/s of clip ({run.seconds:.1f} s, uplink idle "
        f"{run.idle_s:.2f} s of it); receipts checked; every clip's sha256 matches at the receiver",
        ratio=ratio,
        ok=ok,
    )
