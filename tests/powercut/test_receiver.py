"""Power cuts at a receiver: a fin answered success must survive the cut (issue 16).

The receiver (`dock-agent receive`) keeps its store on the power-cut layer; a dock sends files
without pause; at a seeded random instant the receiver is killed and the power cut. Every file
whose fin was answered success must then be in the store, whole, with its manifest.
POWERCUT_RECEIVER_CUTS sets the cuts per model (default 4), POWERCUT_SEED replays.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.transfer import protocol as p
from tests.broker import Broker, running_broker
from tests.powercut import fuse_unavailable
from tests.powercut.conftest import MakeLayer, alive
from tests.powercut.patience import patience
from tests.powercut.zygote import Zygote
from tests.transfer_kit import RawSender

pytestmark = [
    pytest.mark.powercut,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]

DOCK = "dock-powercut"
SEGMENT = 16 * 1024
INFO = {"dock": DOCK}  # the manifest


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running_broker(tmp_path_factory.mktemp("broker")) as b:
        yield b


Pending = tuple[str, bytes]  # a file the dock has not had acked yet: file_id, bytes


class Dock(threading.Thread):
    """Sends random files one after the other; remembers each whose fin was answered success.

    Like a real dock it keeps sending the same file until its fin is answered (a new file id
    for each unanswered init would fill the receiver's transfers in progress per client, and
    it refuses every new init from then on), and after a cut it resumes the file it had.
    """

    def __init__(self, broker: Broker, rng: random.Random, pending: Pending | None) -> None:
        super().__init__(daemon=True)
        self.sender = RawSender(broker, DOCK)
        self.rng = rng
        self.pending = pending
        self.acked: dict[str, bytes] = {}  # file_id -> bytes
        self.stop = threading.Event()
        self.talking = threading.Event()  # the receiver answered: the clock of the cut may start

    def run(self) -> None:
        while not self.stop.is_set():
            if self.pending is None:
                data = os.urandom(self.rng.randrange(1, 5 * SEGMENT))
                self.pending = (hashlib.sha256(data).hexdigest(), data)
            fid, data = self.pending
            if self._send(fid, data):
                self.acked[fid] = data
                self.pending = None

    def _send(self, fid: str, data: bytes) -> bool:
        meta = p.FileMeta(name=f"{fid[:12]}.bin", size=len(data), checksum=fid, user_data=INFO)
        # A short wait: until the receiver subscribed, an init goes nowhere.
        answer = self.sender.command(p.init_topic("$file", fid), p.init_payload(meta), timeout=1)
        if answer is None or not answer.ok or self.stop.is_set():
            return False
        self.talking.set()
        for offset in range(0, len(data), SEGMENT):
            answer = self.sender.segment(fid, offset, data[offset : offset + SEGMENT])
            if answer is None or not answer.ok or self.stop.is_set():
                return False
        answer = self.sender.fin(fid, len(data))
        return answer is not None and answer.ok


class Notified:
    """A $NOTIFY_SOCKET of our own: the receiver's READY=1 says its start-up is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def ready(self, pid: int, timeout: float) -> bool:
        """True once READY=1 arrived; False after `timeout` or once `pid` is gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(pid):
            self.sock.settimeout(0.5)
            try:
                if b"READY=1" in self.sock.recv(4096).split(b"\n"):
                    return True
            except TimeoutError:
                continue
        return False

    def close(self) -> None:
        self.sock.close()


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll `cond` until true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def missing(store: Path, acked: dict[str, bytes]) -> list[str]:
    """Acked files the store does not hold whole, with their manifest."""
    out = []
    for fid, data in acked.items():
        fdir = store / DOCK / fid
        path = fdir / f"{fid[:12]}.bin"
        if not path.is_file() or path.read_bytes() != data:
            out.append(
                f"{fid[:12]}: fin answered success, file {'wrong' if path.exists() else 'lost'}"
            )
        elif not (fdir / "manifest.json").is_file():
            out.append(f"{fid[:12]}: fin answered success, manifest lost")
        elif json.loads((fdir / "manifest.json").read_text()) != INFO:
            out.append(f"{fid[:12]}: fin answered success, manifest has other content")
    return out


@pytest.mark.parametrize("model", ["ext4", "posix"])
def test_a_fin_answered_success_survives_a_power_cut(
    tmp_path: Path, broker: Broker, zygote: Zygote, layers: MakeLayer, model: str
) -> None:
    cuts = int(os.environ.get("POWERCUT_RECEIVER_CUTS", "4"))
    seed = int(os.environ.get("POWERCUT_SEED") or random.randrange(1 << 30))
    print(f"receiver power-cut test ({model}): {cuts} cuts, seed {seed}")
    rng = random.Random(seed)
    (tmp_path / "back").mkdir()
    store = tmp_path / "store"
    fs = layers(tmp_path / "back", store, journal=model == "ext4")
    cfg = tmp_path / "receiver.toml"
    cfg.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[receiver]\nstore_dir = "{store}"\nclient_id = "receiver-powercut"\n'
    )
    log = tmp_path / "receiver.log"
    notify = Notified(tmp_path / "notify")
    docks: list[Dock] = []
    found: list[str] = []

    def acked() -> dict[str, bytes]:
        return {fid: data for d in docks for fid, data in list(d.acked.items())}

    def why(n: int, what: str) -> str:
        return f"seed {seed}, cut {n}: {what}; receiver log:\n{log.read_text()[-2000:]}"

    try:
        for n in range(1, cuts + 1):
            fs.mount()
            found += [f"cut {n - 1}: {m}" for m in missing(store, acked())]
            pid = zygote.start(
                ["receive", "-c", str(cfg)], log, {"NOTIFY_SOCKET": str(notify.path)}
            )
            assert notify.ready(pid, patience(30)), why(n, "the receiver never got ready")
            pending = docks[-1].pending if docks else None
            docks.append(Dock(broker, random.Random(rng.random()), pending))
            docks[-1].start()
            assert docks[-1].talking.wait(patience(30)), why(n, "the receiver never answered")
            if n == 1:  # at least one answered fin must be at stake, or the test proves nothing
                first = docks[-1]
                assert wait_until(lambda d=first: bool(d.acked), patience(60)), why(n, "no fin")
            time.sleep(rng.uniform(0.2, 2.0))
            os.killpg(pid, signal.SIGKILL)
            fs.cut()
            docks[-1].stop.set()  # it finds out when its next command times out
            assert zygote.wait(pid) == -signal.SIGKILL
            docks[-1].join(patience(30))
            # Gone with its client id: a session left connected would take the id back from
            # the next dock (paho reconnects within 0.5 s), and the two would kick each other
            # off the broker until neither heard an answer.
            docks[-1].sender.close()
        fs.mount()
        found += [f"cut {cuts}: {m}" for m in missing(store, acked())]
    finally:
        notify.close()
        for d in docks:
            d.stop.set()
            d.join(patience(30))
            d.sender.close()
    print(f"receiver power-cut test: {len(acked())} fins answered success")
    assert acked(), "no fin was answered in time: the test proves nothing"
    assert not found, f"seed {seed} ({model}):\n" + "\n".join(found[:40])
