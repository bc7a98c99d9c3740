"""The daemon and the receiver do their whole job inside their units' system call filters (SPEC 13).

One docking runs end to end under `strace -f` (every thread and child): a simulated recorder
and, as root, a mass-storage recorder on a loop device (mount, remount, umount), offload,
sync through a real Mosquitto to the receiver (traced too), and the recorders' copies
deleted after the receiver's ack, then a reload the way ExecReload= does it. Every system call made is checked against the shipped
unit's SystemCallFilter= lines, groups expanded by `systemd-analyze syscall-filter`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import load_config
from agent.evidence.custody import iter_entries
from firmware_interface import simkit
from tests.broker import free_port, mosquitto_binary, running_broker
from tests.dock import central_pub, enroll, wait_for
from tests.loopdev import Loops, build_ext4, loop_skip_reason, recorder_tree
from tests.syscall_filter import (
    Filter,
    analyze_binary,
    assert_unit_allows,
    syscall_groups,
    traced_calls,
    unit_filter,
)

pytest_plugins = ["tests.loopdev"]  # media_files
UNITS = Path(__file__).resolve().parent.parent / "systemd"
STRACE = shutil.which("strace")
ANALYZE = analyze_binary()
pytestmark = [
    pytest.mark.skipif(STRACE is None, reason="strace is not installed (scripts/setup.sh --dev)"),
    pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed"),
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed"),
]


@dataclass
class TracedRun:
    """The system calls (name -> count) of the dock's and the receiver's processes."""

    dock: dict[str, int]  # the daemon and the ExecReload= command
    receiver: dict[str, int]
    mounted: bool
    log: str


def traced(args: list[str], trace: Path, log: Path) -> subprocess.Popen[bytes]:
    """`dock-agent ARGS` under strace, every thread and child followed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("JOURNAL_STREAM", None)
    cmd = [STRACE or "strace", "-f", "-qq", "-e", "trace=all", "-o", str(trace)]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*cmd, sys.executable, "-m", "agent", *args], stdout=out, stderr=out, env=env
        )


def tracee(strace: subprocess.Popen[bytes]) -> int:
    """The pid of the program strace started."""
    children = Path(f"/proc/{strace.pid}/task/{strace.pid}/children")
    pid = wait_for(lambda: children.read_text().split(), 10, "the traced process")
    return int(pid[0])


def stop(strace: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the traced program (not to strace, which would detach), then wait."""
    if strace.poll() is None:
        os.kill(tracee(strace), signal.SIGTERM)
        strace.wait(60)


def clips_received(store: Path, client_id: str) -> int:
    """Clip files the receiver holds complete (not the manifests sent beside them)."""
    return sum(
        1
        for f in store.glob(f"{client_id}/*/*")
        if f.is_file()
        and f.name not in ("manifest.json", ".init.json")
        and not f.name.endswith(".manifest.json")
    )


def deleted_from_recorders(data: Path) -> int:
    path = data / "custody.jsonl"
    if not path.exists():
        return 0
    return sum(1 for e in iter_entries(path) if e["event"] == "recorder_clip_deleted")


def dock_toml(tmp: Path, port: int, ui_port: int, device: str | None) -> str:
    text = (
        f'[dock]\nid = "dock-trace"\ndata_dir = "{tmp / "data"}"\n'
        f'[[bay]]\nnumber = 1\nsim_dir = "{tmp / "bay1"}"\n'
    )
    if device:
        text += f'[[bay]]\nnumber = 2\nudev_match = {{ DEVNAME = "{device}" }}\n'
    return text + (
        f'[recorders]\nmount_dir = "{tmp / "media"}"\n'
        "[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
        'delete_from_recorder = "after_upstream_ack"\nclock_sync_source = "auto"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        f'signing_key_file = "{tmp / "keys" / "dock.key"}"\n'
        f'central_key_file = "{central_pub(tmp)}"\n'
        f'[ui]\nlisten = "127.0.0.1:{ui_port}"\n'
    )


@pytest.fixture(scope="module")
def groups() -> dict[str, list[str]]:
    """systemd's system call groups on this machine."""
    return syscall_groups(ANALYZE or "systemd-analyze")


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, media_files: dict[str, Path]
) -> Iterator[TracedRun]:
    """One whole docking, dock and receiver traced."""
    tmp = tmp_path_factory.mktemp("traced")
    with ExitStack() as stack:
        broker = stack.enter_context(running_broker(tmp / "broker"))
        store = tmp / "central"
        rx_cfg = tmp / "receiver.toml"
        keys_dir = tmp / "dock-keys"
        rx_cfg.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n[receiver]\nstore_dir = "{store}"\n'
            f'dock_keys_dir = "{keys_dir}"\nsigning_key_file = "{tmp / "receiver.key"}"\n'
        )
        log = tmp / "run.log"
        receiver = traced(["receive", "-c", str(rx_cfg)], tmp / "receiver.trace", log)
        stack.callback(stop, receiver)
        loops = None if loop_skip_reason() else Loops(tmp)
        if loops is not None:
            stack.callback(loops.cleanup)
        device = loops.free() if loops else None
        ui_port = free_port()
        cfg = tmp / "dock.toml"
        cfg.write_text(dock_toml(tmp, broker.port, ui_port, device))
        enroll(load_config(str(cfg)), keys_dir)  # each side knows the other's public key
        now = datetime.now()
        rec = simkit.SimRecorder(
            device_id="ZFY0077777",
            clips=simkit.shift(now - timedelta(hours=2), [1, 1]),
            battery_pct=95,
        )
        originals = simkit.build(tmp / "bay1", rec, docked=False)
        dock = traced(["run", "-c", str(cfg)], tmp / "dock.trace", log)
        stack.callback(stop, dock)
        wait_for(lambda: (tmp / "data" / "state" / "bays.json").exists(), 30, "the dock up")
        simkit.dock(tmp / "bay1", rec)
        expected = len(originals)
        if loops is not None and device is not None:
            tree = recorder_tree(tmp / "tree", media_files)
            loops.attach(build_ext4(tree, tmp / "rec.img"), device)
            expected += len(media_files)
        wait_for(lambda: clips_received(store, "dock-trace") == expected, 90, "clips synced")
        wait_for(lambda: deleted_from_recorders(tmp / "data") == expected, 60, "deletions")
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/status", timeout=10) as r:
            assert json.load(r)
        # systemctl reload: ExecReload= runs /bin/kill -HUP $MAINPID inside the unit too.
        cfg.write_text(cfg.read_text().replace("[dock]\n", '[dock]\nlog_level = "debug"\n'))
        subprocess.run(
            [
                STRACE or "strace",
                "-f",
                "-qq",
                "-e",
                "trace=all",
                "-o",
                str(tmp / "reload.trace"),
                "/bin/kill",
                "-HUP",
                str(tracee(dock)),
            ],
            check=True,
            timeout=30,
        )
        wait_for(lambda: "reload: " in log.read_text(errors="replace"), 15, "the reload")
        stop(dock)
        stop(receiver)
        assert not any(p.exists() for p in originals)
        dock_calls = traced_calls(tmp / "dock.trace")
        for call, count in traced_calls(tmp / "reload.trace").items():
            dock_calls[call] = dock_calls.get(call, 0) + count
        yield TracedRun(
            dock_calls,
            traced_calls(tmp / "receiver.trace"),
            loops is not None,
            log.read_text(errors="replace"),
        )


def test_dock_unit_allows_every_call_of_a_whole_docking(
    run: TracedRun, groups: dict[str, list[str]]
) -> None:
    assert {"openat", "read", "fsync", "connect", "futex"} <= set(run.dock), "a real trace"
    if run.mounted:  # as root the mass-storage recorder was mounted, remounted, unmounted
        assert {"mount", "umount2"} <= set(run.dock)
    assert_unit_allows(UNITS / "dock-agent.service", run.dock, groups)
    print(
        f"dock: {len(run.dock)} distinct calls, {sum(run.dock.values())} made; {sorted(run.dock)}"
    )


def test_receiver_unit_allows_every_call(run: TracedRun, groups: dict[str, list[str]]) -> None:
    assert {"openat", "fsync", "connect"} <= set(run.receiver), "a real trace"
    assert_unit_allows(UNITS / "dock-agent-receiver.service", run.receiver, groups)


def test_a_unit_denying_file_system_fails_naming_the_calls(
    run: TracedRun, groups: dict[str, list[str]], tmp_path: Path
) -> None:
    for name, calls in (
        ("dock-agent.service", run.dock),
        ("dock-agent-receiver.service", run.receiver),
    ):
        text = (UNITS / name).read_text()
        copy = tmp_path / name
        copy.write_text(text.replace("[Install]", "SystemCallFilter=~@file-system\n\n[Install]"))
        with pytest.raises(AssertionError) as failure:
            assert_unit_allows(copy, calls, groups)
        message = str(failure.value)
        assert f"{name} would refuse" in message and "openat (" in message, message


def test_filter_lines_merge_in_order(groups: dict[str, list[str]], tmp_path: Path) -> None:
    flt = Filter()
    flt.apply("@system-service @mount", groups)
    flt.apply("~@privileged @clock", groups)
    assert not flt.denies("mount") and flt.denies("adjtimex") and flt.denies("setuid")
    assert not flt.denies("exit_group") and flt.denies("ptrace")
    deny_first = Filter()
    deny_first.apply("~@mount:EPERM", groups)
    deny_first.apply("umount2", groups)  # a later allow line takes it out of the deny list
    assert deny_first.denies("mount") and not deny_first.denies("umount2")
    assert not deny_first.denies("openat")
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nProtectClock=yes\nSystemCallFilter=@system-service\n")
    assert unit_filter(unit, groups).denies("clock_adjtime"), "ProtectClock= filters @clock"


def test_trace_lines_are_counted_once(tmp_path: Path) -> None:
    trace = tmp_path / "t"
    trace.write_text(
        '101 openat(AT_FDCWD, "/x", O_RDONLY) = 3\n'
        "102 futex(0x7f, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL <unfinished ...>\n"
        '101 read(3, "abc", 3) = 3\n'
        "102 <... futex resumed>) = 0\n"
        "101 --- SIGCHLD {si_signo=SIGCHLD} ---\n"
        "103 +++ exited with 0 +++\n"
        "101 syscall_0x1c1(0x1, 0x2) = -1 ENOSYS (Function not implemented)\n"
    )
    assert traced_calls(trace) == {"openat": 1, "futex": 1, "read": 1, "syscall_0x1c1": 1}
