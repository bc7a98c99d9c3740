"""`dock-agent receive` as its own process on a real Mosquitto: floods, and a worker that fails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.transfer import protocol as p
from agent.transfer.receiver.coverage import MAX_RANGES
from tests.broker import Broker
from tests.dock import wait_for
from tests.test_receiver_hostile import legitimate_transfer_works, pipelined
from tests.transfer_kit import RawSender

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker

# The receiver in a process of its own: it and the flooding client then use both cores.
RUN = "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))"
# The same, with a worker forced to raise on the first init.
BROKEN = (
    "import sys\n"
    "from agent.transfer.receiver import partials\n"
    "def boom(*_a, **_k):\n"
    "    raise RuntimeError('forced failure in a worker')\n"
    "partials.TransferStore.begin = boom\n" + RUN
)


@contextmanager
def receive_process(
    broker: Broker, store: Path, code: str = RUN, extra: str = "", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`dock-agent receive -c` a config for `broker` and `store`, stopped (SIGTERM) afterwards."""
    conf = store.parent / "receiver.toml"
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[receiver]\nstore_dir = "{store}"\n{extra}'
    )
    log = open(store.parent / "receiver.log", "w")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "receive", "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        _wait_subscribed(broker, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()


def _wait_subscribed(broker: Broker, proc: subprocess.Popen[str]) -> None:
    """Until the receiver answers a command (it is then connected and subscribed)."""
    probe = RawSender(broker, "probe")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if probe.command("$file/probe/abort", timeout=0.5) is not None:
                return
        raise AssertionError("the receiver process did not start serving")
    finally:
        probe.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_two_thousand_inits_from_one_client_hold_no_descriptors_and_others_still_send(
    broker: Broker, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with receive_process(broker, store) as proc:
        fds_before = open_fds(proc.pid)
        attacker = RawSender(broker, "attacker", max_inflight=0)
        try:
            inits = []
            for i in range(2000):
                fid = p.sha256_hex(b"%d" % i)
                inits.append((p.init_topic("$file", fid), p.init_payload(p.FileMeta("f", 9, fid))))
            answers = pipelined(attacker, inits)
        finally:
            attacker.close()
        assert all(a is not None for a in answers), "every init answered"
        ok = sum(1 for a in answers if a is not None and a.ok)
        full = [a for a in answers if a is not None and a.reason_code == p.QUOTA_EXCEEDED]
        assert ok == 16 and len(full) == 2000 - 16, "max_partials_per_client (16) in progress"
        assert "16 transfers in progress" in full[0].reason_description
        assert len(list((store / "attacker").iterdir())) == 16
        assert open_fds(proc.pid) <= fds_before + 2, "no descriptor held per idle init"
        legitimate_transfer_works(broker, store)
        assert proc.poll() is None


def test_twenty_thousand_one_byte_segments_are_bounded_and_others_still_send(
    broker: Broker, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    data = os.urandom(40_000)
    fid = p.sha256_hex(data)
    with receive_process(broker, store):
        dock = RawSender(broker, "raw-dock", max_inflight=0)  # paho's queue is slow, not tested
        try:
            assert dock.init(fid, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
            one_bytes = [
                (p.segment_topic("$file", fid, o, p.sha256_hex(data[o : o + 1])), data[o : o + 1])
                for o in range(0, len(data), 2)  # every other byte: 20,000 separate ranges
            ]
            answers = pipelined(dock, one_bytes)
            assert all(a is not None for a in answers), "every segment answered"
            accepted = sum(1 for a in answers if a is not None and a.ok)
            refused = [a for a in answers if a is not None and not a.ok]
            assert accepted == MAX_RANGES and len(refused) == 20_000 - MAX_RANGES
            assert all("byte ranges" in a.reason_description for a in refused)
            legitimate_transfer_works(broker, store)
            whole = [
                (
                    p.segment_topic("$file", fid, o, p.sha256_hex(data[o : o + 4096])),
                    data[o : o + 4096],
                )
                for o in range(0, len(data), 4096)
            ]
            assert all(a is not None and a.ok for a in pipelined(dock, whole)), "gaps filled"
            assert dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
        finally:
            dock.close()
    assert (store / "raw-dock" / fid / "clip.MP4").read_bytes() == data


def test_a_worker_that_raises_ends_the_process_non_zero(broker: Broker, tmp_path: Path) -> None:
    store = tmp_path / "store"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(5)
    systemd = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    with notify, receive_process(broker, store, code=BROKEN, env=systemd) as proc:
        states = [notify.recv(4096).decode() for _ in range(2)]
        assert states[0].startswith("READY=1") and states[1] == "WATCHDOG=1", states
        dock = RawSender(broker, "raw-dock")
        try:
            fid = p.sha256_hex(b"x")
            resp = dock.init(fid, "x.MP4", 1)
            assert resp is not None and resp.reason_code == p.IMPLEMENTATION_SPECIFIC_ERROR
            assert proc.wait(15) == 1, "ended non-zero, so that systemd restarts it"
        finally:
            dock.close()
        notify.settimeout(0)
        after: list[str] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                after.append(notify.recv(4096).decode())
    assert any(s.startswith("STOPPING=1") for s in after)
    log = (tmp_path / "receiver.log").read_text()
    assert "forced failure in a worker" in log
    assert "receiver worker 0 failed" in log or "receiver worker 1 failed" in log
    assert not (store / "raw-dock").exists()


def test_a_stray_sighup_does_not_end_receiving(broker: Broker, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with receive_process(broker, store) as proc:
        proc.send_signal(signal.SIGHUP)
        log_file = tmp_path / "receiver.log"
        told = "SIGHUP: the receiver reads its configuration only at start"
        wait_for(lambda: told in log_file.read_text(), 10, "the receiver's answer to SIGHUP")
        assert proc.poll() is None, "SIGHUP ended the receiver"
        legitimate_transfer_works(broker, store)
        proc.terminate()
        assert proc.wait(30) == 0
    log = (tmp_path / "receiver.log").read_text()
    assert "SIGHUP: the receiver reads its configuration only at start" in log
