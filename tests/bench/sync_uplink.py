"""SPEC 10: sync over a station's uplink (40 Mbit/s, 40 ms round trip, tests/bench/linkproxy.py).

The dock (FileSender, the daemon's settings) reaches Mosquitto only through the proxy;
`dock-agent receive` sits beside the broker, as central does. Measured: the clip's bytes over
the seconds from its init to the fin of its manifest file (SPEC 7.1: a clip is acked when both
are), so the manifest transfer, the signatures (SPEC 11) and the receipts are inside the time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

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


def _manifest(file_id: str, size: int) -> dict[str, Any]:
    notes = [{"note_id": f"n{i}", "type": "gap", "text": "换电池" * 40} for i in range(10)]
    return {"dock_id": "dock-bench", "sha256": file_id, "size": size, "notes": notes}


def uplink_send(
    workdir: Path, clip: Path, size: int, file_id: str, segment: int, window: int
) -> tuple[float, bool, bool]:
    """(seconds, receiver copy intact, receipts checked) for clip + manifest through the proxy."""
    from tests.bench.bench_sync import connect, keyed, start_receiver

    store = workdir / "store"
    with running_broker(workdir / "broker") as broker:
        extra, signer = keyed(workdir)
        receiver = start_receiver(workdir, store, broker.port, extra)
        proxy = LinkProxy((broker.host, broker.port), RATE, RTT)
        client, link = connect(proxy.port, "dock-bench")
        try:
            sender = FileSender(
                link,
                "dock-bench",
                workdir / "state",
                SendSettings(ack_timeout_s=2.0, max_tries=30),
                signer,
            )
            tiny = workdir / "warmup.bin"
            tiny.write_bytes(b"warm-up")
            sender.send(tiny, hashlib.sha256(b"warm-up").hexdigest(), "warmup.bin", 7, {})
            sender.settings = dataclasses.replace(
                SendSettings(), segment_bytes=segment, max_inflight=window
            )
            parcels = Parcels(workdir / "manifests")
            started = time.monotonic()
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
            client.disconnect()
            client.loop_stop()
            proxy.close()
            receiver.terminate()
            receiver.wait(30)
    held = store / "dock-bench" / file_id / "clip.mp4"
    if not held.is_file() or sha256_file(held) != file_id:
        raise NotStored(f"the receiver's {held} is missing or differs: the send is not timed")
    return seconds, True, True


def uplink_row(workdir: Path, clip: Path, size: int, file_id: str, seg: int, win: int) -> Row:
    """The SPEC 10 uplink row."""
    raw = raw_rate(RATE, RTT)
    rtt = measured_rtt(RATE)
    seconds, intact, keyed = uplink_send(workdir, clip, size, file_id, seg, win)
    rate = size / seconds
    ratio = rate / RATE
    return Row(
        what=f"sync of a {size // MIB} MiB clip over a 40 Mbit/s, 40 ms RTT uplink (TCP proxy in "
        "the benchmark) through Mosquitto to the receiver",
        target="clip bytes acked per second ≥ 0.9 × the proxy's rate, manifests and receipts "
        "included",
        baseline=f"proxy {RATE * 8 / 1e6:.0f} Mbit/s = {RATE / 1e6:.2f} MB/s; measured through "
        f"it: one raw TCP stream {raw / 1e6:.2f} MB/s, round trip {rtt * 1000:.0f} ms",
        measured=f"clip + manifest file acked: {rate / 1e6:.2f} MB/s ({seconds:.1f} s); "
        f"receipts {'checked' if keyed else 'not issued by this receiver (no dock keys)'}; "
        f"receiver copy sha256 {'matches' if intact else 'DIFFERS'}",
        ratio=ratio,
        ok=ratio >= 0.9 and intact,
    )
