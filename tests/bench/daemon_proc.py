"""The daemon in a process of its own, for rows that time or throttle the daemon alone.

`python -m tests.bench.daemon_proc CONFIG.json [CGROUP_DIR]` joins the blkio cgroup CGROUP_DIR
first (so every thread and child of the daemon is throttled there, and nothing else is),
assembles the daemon as `dock-agent run` does (analysis worker included, MQTT unreachable)
and prints one JSON line per bay state change and per change of the analysis worker's
idleness, each stamped with CLOCK_MONOTONIC (the parent's time.monotonic()). It stops at the
end of its standard input. The parent side is `DaemonProc`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.evidence.store import sha256_file
from tests.bench import stored
from tests.bench.stored import FINISHED_STATES, NotStored

REPO = Path(__file__).resolve().parents[2]
_out_lock = threading.Lock()


def _say(**fields: Any) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps({**fields, "t": time.monotonic()}) + "\n")
        sys.stdout.flush()


class _BayStates:
    """Bus listener: one line each time a bay's state changes."""

    def __init__(self) -> None:
        self.last: dict[int, str] = {}

    def __call__(self, item: object) -> None:
        from agent.events import BayView

        if isinstance(item, BayView) and self.last.get(item.number) != item.state:
            self.last[item.number] = item.state
            p = item.progress
            _say(bay=item.number, state=item.state, done=p.clips_done, total=p.clips_total)


def _watch_analysis(analyser: Any, stop: threading.Event) -> None:
    idle = True
    while not stop.wait(0.02):
        now = bool(analyser.idle())
        if now != idle:
            idle = now
            _say(analysis="idle" if now else "busy")


def child(config: Path, cgroup: Path | None) -> int:
    """Run the daemon until stdin closes."""
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
    if log := os.environ.get("BENCH_DAEMON_LOG"):  # for finding where the time goes
        import logging

        fmt = "%(created).3f %(threadName)s %(name)s %(message)s"
        logging.basicConfig(filename=log, level=logging.DEBUG, format=fmt)
    from agent.config import parse_config
    from agent.daemon.wiring import assemble

    cfg = parse_config(json.loads(config.read_text(encoding="utf-8")))
    daemon = assemble(cfg, refresh_s=5.0)
    daemon.services.bus.subscribe(_BayStates())
    daemon.start()
    stop = threading.Event()
    assert daemon.parts is not None and daemon.parts.analysis is not None
    watcher = threading.Thread(
        target=_watch_analysis, args=(daemon.parts.analysis, stop), daemon=True
    )
    watcher.start()
    _say(ready=True)
    try:
        sys.stdin.read()
    finally:
        stop.set()
        daemon.stop()
    return 0


class DaemonProc:
    """The parent's side: spawn, follow the state lines, read the CPU time, stop."""

    def __init__(self, config: dict[str, Any], root: Path, cgroup: Path | None = None) -> None:
        path = root / "daemon-config.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        cmd = [sys.executable, "-m", "tests.bench.daemon_proc", str(path)]
        if cgroup is not None:
            cmd.append(str(cgroup))
        self.lines: list[dict[str, Any]] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(json.loads(line))
                self._seen.notify_all()
        with self._seen:
            self.lines.append({"exited": self.proc.wait()})
            self._seen.notify_all()

    def wait(self, done: Any, timeout: float, what: str) -> Any:
        """Wait until `done(lines)` is truthy (its value returned); raise naming `what`."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while not (value := done(self.lines)):
                if any("exited" in line for line in self.lines):
                    raise RuntimeError(f"the daemon exited while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout:.0f} s")
                self._seen.wait(min(left, 1.0))
            return value

    def wait_ready(self) -> None:
        """Until the daemon has started."""
        self.wait(lambda lines: any(line.get("ready") for line in lines), 60, "daemon start")

    def finished(self, bays: list[int], since: float, timeout: float) -> dict[int, float]:
        """When each bay, having offloaded after `since`, finished (a fault raises)."""
        return self.wait(lambda lines: bays_done(lines, bays, since), timeout, "offload")

    def analysed(self, since: float, timeout: float) -> float:
        """When the analysis worker was last idle again after `since` (busy once at least)."""

        def idle_again(lines: list[dict[str, Any]]) -> float | None:
            went = [x for x in lines if "analysis" in x and x["t"] >= since]
            return went[-1]["t"] if went and went[-1]["analysis"] == "idle" else None

        return float(self.wait(idle_again, timeout, "analysis"))

    def cpu_seconds(self) -> float:
        """CPU time of the daemon (user + sys, all threads, and its reaped children)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Close stdin (the daemon stops and unmounts); kill it if it hangs."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bays_done(
    lines: list[dict[str, Any]], bays: list[int], since: float
) -> dict[int, float] | None:
    """Each bay's finishing time once all offloaded after `since`; RuntimeError on a fault."""
    done: dict[int, float] = {}
    for bay in bays:
        seen = [x for x in lines if x.get("bay") == bay and x["t"] >= since]
        if any(x["state"] == "fault" for x in seen):
            raise NotStored(f"bay {bay} ended in fault: a failed offload is not timed")
        states = [x["state"] for x in seen]
        if "offloading" not in states:
            return None
        after = seen[states.index("offloading") :]
        end = next((x for x in after if x["state"] in FINISHED_STATES), None)
        if end is None:
            return None
        done[bay] = end["t"]
    return done


def check_stored(data_dir: Path, expected: dict[str, tuple[str, int]]) -> None:
    """Every expected clip (file name: (sha256, size)) indexed under its name, held locally,
    verified (stored.check_stored: a clip_verified custody entry) and hashing right now."""
    stored.check_stored(data_dir, dict(expected.values()))
    from agent.evidence.index.clip_index import ClipIndex

    index = ClipIndex(data_dir)
    try:
        records = {r["file_name"]: r for r in index.iter_all()}
    finally:
        index.close()
    for name, (sha, _size) in expected.items():
        record = records.get(name)
        if record is None or record["sha256"] != sha:
            raise NotStored(f"{name}: not stored with its recorder's sha256")
        if sha256_file(record["local_path"]) != sha:
            raise NotStored(f"{name}: the stored copy does not hash right")


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(child(Path(args[0]), Path(args[1]) if len(args) > 1 else None))
