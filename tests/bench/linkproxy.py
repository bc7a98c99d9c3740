"""A TCP proxy that behaves like a station's uplink: a rate limit and a round-trip delay.

Each direction is a bottleneck of `rate` bytes per second followed by `rtt / 2` of propagation:
a chunk read at time t leaves the bottleneck at max(t, previous departure) + len / rate and is
written to the other side `rtt / 2` later. At most `buffer` bytes wait in each direction (a
modem's queue); beyond that the proxy stops reading, so TCP's own flow control pushes back on
the sender, as a real full link does (1 MiB by default: 0.2 s at 40 Mbit/s, a modem's queue,
so that a proxy thread scheduled late on a busy machine does not idle the link). No kernel qdisc
or privileges needed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

CHUNK = 16384


@dataclass
class _Pipe:
    """One direction of one connection."""

    src: socket.socket
    dst: socket.socket
    rate: float
    delay: float
    buffer: int
    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    queued: int = 0
    departed: float = 0.0
    closed: bool = False
    cond: threading.Condition = field(default_factory=threading.Condition)
    idle: float = 0.0  # seconds the bottleneck had nothing to send, since the first byte
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (from, seconds) >= 10 ms

    def read(self) -> None:
        while True:
            with self.cond:
                while self.queued >= self.buffer and not self.closed:
                    self.cond.wait()
            try:
                data = self.src.recv(CHUNK)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                now = time.monotonic()
                if self.departed and now > self.departed:
                    self.idle += now - self.departed
                    if now - self.departed >= 0.01:
                        self.gaps.append((self.departed, now - self.departed))
                self.departed = max(self.departed, now) + len(data) / self.rate
                self.queue.append((self.departed + self.delay, data))
                self.queued += len(data)
                self.cond.notify_all()

    def write(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if not self.queue:
                    break
                due, data = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.dst.sendall(data)
            except OSError:
                break
            with self.cond:
                self.queue.popleft()
                self.queued -= len(data)
                self.cond.notify_all()
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)


class LinkProxy:
    """Listens on 127.0.0.1:`port` (a free one by default) and forwards every connection to
    `target` through the link."""

    def __init__(
        self,
        target: tuple[str, int],
        rate_bytes_per_s: float,
        rtt_s: float,
        buffer: int = 1 << 20,
        port: int = 0,
    ) -> None:
        self.target = target
        self.rate = rate_bytes_per_s
        self.delay = rtt_s / 2
        self.buffer = buffer
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = int(self.server.getsockname()[1])
        self._sockets: list[socket.socket] = [self.server]
        self._up: list[_Pipe] = []  # the client-to-server direction of each connection
        threading.Thread(target=self._accept, daemon=True, name="linkproxy").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (conn, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(s)
            for src, dst in ((conn, upstream), (upstream, conn)):
                pipe = _Pipe(src, dst, self.rate, self.delay, self.buffer)
                if src is conn:
                    self._up.append(pipe)
                threading.Thread(target=pipe.read, daemon=True).start()
                threading.Thread(target=pipe.write, daemon=True).start()

    def upstream_idle(self) -> float:
        """Seconds the client-to-server bottleneck has idled so far, summed over connections
        (the current gap included): the difference of two calls is the idle time between them."""
        total = 0.0
        now = time.monotonic()
        for pipe in self._up:
            with pipe.cond:
                total += pipe.idle + (max(0.0, now - pipe.departed) if pipe.departed else 0.0)
        return total

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def raw_rate(rate_bytes_per_s: float, rtt_s: float, seconds: float = 3.0) -> float:
    """Bytes per second one plain TCP stream delivers through such a link (steady state)."""
    sink = socket.create_server(("127.0.0.1", 0))
    received = [0]

    def drain() -> None:
        conn, _ = sink.accept()
        with conn:
            while data := conn.recv(1 << 16):
                received[0] += len(data)

    threading.Thread(target=drain, daemon=True).start()
    proxy = LinkProxy(("127.0.0.1", int(sink.getsockname()[1])), rate_bytes_per_s, rtt_s)
    stop = threading.Event()

    def push() -> None:
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            block = b"\0" * 65536
            with contextlib.suppress(OSError):  # the proxy closes under it at the end
                while not stop.is_set():
                    s.sendall(block)

    threading.Thread(target=push, daemon=True).start()
    try:
        time.sleep(1.0)  # past slow start and the queue filling
        before, started = received[0], time.monotonic()
        time.sleep(seconds)
        return (received[0] - before) / (time.monotonic() - started)
    finally:
        stop.set()
        proxy.close()
        sink.close()
