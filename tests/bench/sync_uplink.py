"""SPEC 10: sync over a station's uplink (40 Mbit/s, 40 ms round trip, tests/bench/linkproxy.py).

The dock (FileSender, the daemon's settings) reaches Mosquitto only through the proxy;
`dock-agent receive` sits beside the broker, as central does. Measured: the clip's bytes over
the seconds from the first custody chunk's init to the fin of the clip's manifest file: as the
daemon does, the custody chunks covering the clip's `clip_offloaded` entry go first (SPEC 8.1,
built by agent/chain from a real custody log, signed with the dock's key), then the clip and
its manifest (SPEC 7.1: a clip is acked when both are), so the chunks, the manifest transfer,
the signatures (SPEC 11) and the receipts are inside the time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.upload import ChainUpload
from agent.evidence.custody import CustodyLog
from agent.sync.parcel import Parcels, manifest_name, manifest_user_data
from agent.transfer.sender import FileSender, SendSettings
from tests.bench import Row
from tests.bench.linkproxy import LinkProxy, raw_rate
from tests.bench.stored import NotStored, sha256_file
from tests.broker import running_broker

RATE = 40_000_000 / 8  # 40 Mbit/s in bytes per second
RTT = 0.040
MIB = 1 << 20


def measured_rtt(proxy_rate: float) -> float:
    """Seconds for one byte to go through the link to an echo server and back (median of 5)."""
    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    proxy = LinkProxy(("127.0.0.1", int(echo.getsockname()[1])), proxy_rate, RTT)
    samples = []
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(5):
            started = time.monotonic()
            s.sendall(b"x")
            s.recv(1)
            samples.append(time.monotonic() - started)
    proxy.close()
    echo.close()
    return sorted(samples)[2]


def warm_sender(link: Any, workdir: Path, signer: Any, segment: int, window: int) -> FileSender:
    """The dock's sender over `link`, warmed up by one tiny transfer (the connection, the
    receiver's key lookup), then set to `segment` bytes and a window of `window`."""
    sender = FileSender(
        link, "dock-bench", workdir / "state", SendSettings(ack_timeout_s=2.0, max_tries=30), signer
    )
    tiny = workdir / "warmup.bin"
    tiny.write_bytes(b"warm-up")
    sender.send(tiny, hashlib.sha256(b"warm-up").hexdigest(), "warmup.bin", 7, {})
    sender.settings = dataclasses.replace(
        SendSettings(), segment_bytes=segment, max_inflight=window
    )
    return sender


def _manifest(file_id: str, size: int) -> dict[str, Any]:
    notes = [{"note_id": f"n{i}", "type": "gap", "text": "换电池" * 40} for i in range(10)]
    return {"dock_id": "dock-bench", "sha256": file_id, "size": size, "notes": notes}


def custody_log(workdir: Path, file_id: str, size: int) -> tuple[Path, int]:
    """A real custody log as a docking leaves it: the clip's `clip_offloaded` entry; its seq."""
    path = workdir / "data" / "custody.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    log = CustodyLog(path)
    try:
        log.append("docked", device_id="ZFY0012345", bay=1)
        entry = log.append(
            "clip_offloaded", device_id="ZFY0012345", file="clip.mp4", sha256=file_id, size=size
        )
        log.append("offload_complete", device_id="ZFY0012345", bay=1)
    finally:
        log.close()
    return path, int(entry["seq"])


def uplink_send(
    workdir: Path, clip: Path, size: int, file_id: str, segment: int, window: int
) -> tuple[float, int, bool]:
    """(seconds, custody chunk bytes sent, receiver copy intact) for the custody chunks, the
    clip and its manifest through the proxy."""
    from tests.bench.bench_sync import dock_connection, keyed, start_receiver

    store = workdir / "store"
    dock_key = Ed25519PrivateKey.generate()
    log, seq = custody_log(workdir, file_id, size)
    with running_broker(workdir / "broker") as broker:
        extra, signer = keyed(workdir, dock=dock_key)
        receiver = start_receiver(workdir, store, broker.port, extra)
        proxy = LinkProxy((broker.host, broker.port), RATE, RTT)
        link = dock_connection(proxy.port, "dock-bench")
        try:
            sender = warm_sender(link, workdir, signer, segment, window)
            parcels = Parcels(workdir / "manifests")
            sent = sender.send
            chunk_bytes = [0]

            def send_chunk(path: Path, *args: Any, **kw: Any) -> Any:
                chunk_bytes[0] += path.stat().st_size
                return sent(path, *args, **kw)

            chain = ChainUpload(log, "dock-bench", dock_key, workdir / "chain", send_chunk)
            started = time.monotonic()
            chain.ensure(seq)  # as the sync worker's before_clip does
            parcel = parcels.prepare(file_id, lambda: _manifest(file_id, size))
            sender.send(clip, file_id, "clip.mp4", size, parcel.user_data)
            sender.send(
                parcel.manifest_path,
                parcel.manifest_sha256,
                manifest_name("clip.mp4"),
                parcel.manifest_size,
                manifest_user_data("dock-bench", file_id),
            )
            seconds = time.monotonic() - started
        finally:
            link.stop()
            proxy.close()
            receiver.terminate()
            receiver.wait(30)
    held = store / "dock-bench" / file_id / "clip.mp4"
    if not held.is_file() or sha256_file(held) != file_id:
        raise NotStored(f"the receiver's {held} is missing or differs: the send is not timed")
    if chain.held_seq < seq:
        raise NotStored(f"central holds the custody chain to seq {chain.held_seq}, not {seq}")
    return seconds, chunk_bytes[0], True


def uplink_row(workdir: Path, clip: Path, size: int, file_id: str, seg: int, win: int) -> Row:
    """The SPEC 10 uplink row."""
    raw = raw_rate(RATE, RTT)
    rtt = measured_rtt(RATE)
    seconds, chunk_bytes, intact = uplink_send(workdir, clip, size, file_id, seg, win)
    rate = size / seconds
    ratio = rate / RATE
    return Row(
        what=f"sync of a {size // MIB} MiB clip over a 40 Mbit/s, 40 ms RTT uplink (TCP proxy in "
        "the benchmark) through Mosquitto to the receiver",
        target="clip bytes acked per second ≥ 0.9 × the proxy's rate, manifests, receipts and "
        "custody chunks included",
        baseline=f"proxy {RATE * 8 / 1e6:.0f} Mbit/s = {RATE / 1e6:.2f} MB/s; measured through "
        f"it: one raw TCP stream {raw / 1e6:.2f} MB/s, round trip {rtt * 1000:.0f} ms",
        measured=f"custody chunk(s) ({chunk_bytes} bytes) + clip + manifest file acked: "
        f"{rate / 1e6:.2f} MB/s of clip ({seconds:.1f} s); receipts checked; "
        f"receiver copy sha256 {'matches' if intact else 'DIFFERS'}",
        ratio=ratio,
        ok=ratio >= 0.9 and intact,
    )
