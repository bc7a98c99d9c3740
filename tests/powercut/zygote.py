"""Start `dock-agent` processes by fork from one Python that already imported the agent.

A power-cut run restarts the daemon after every cut; importing the agent costs
seconds per start (OpenCV, NumPy), forking costs milliseconds. The child runs
`agent.cli.main(argv)` exactly as the console script does, in its own process group.
Server side: `python -m tests.powercut.zygote` reads `start LOG ARGV-JSON` and
`wait PID` lines, answers `pid N` and `rc N` (negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_REPO = Path(__file__).resolve().parents[2]


class Zygote:
    """The test side: a forking server for dock-agent processes."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(_REPO), PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_REPO,
            env=env,
        )
        self._running: set[int] = set()
        self._ask_ready()

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError("the zygote process died")
        return answer.strip()

    def _ask_ready(self) -> None:
        assert self._ask("ping") == "pong"

    def start(self, argv: list[str], log: Path) -> int:
        """Fork `dock-agent ARGV` with stdout and stderr appended to `log`; its pid."""
        pid = int(self._ask(f"start {log} {json.dumps(argv)}").split()[1])
        self._running.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        """Reap a started process; its return code (SIGKILLed after 60 s: -9 says it hung)."""
        rc = int(self._ask(f"wait {pid}").split()[1])
        self._running.discard(pid)
        return rc

    def close(self) -> None:
        """Kill what is still running (a failed test leaves no daemon behind), then stop."""
        for pid in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(RuntimeError, OSError):
                self.wait(pid)
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)

    def __enter__(self) -> Zygote:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _child(log: str, argv: list[str]) -> None:
    os.setpgid(0, 0)  # also done by the parent: killpg must work from the first instant
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    rc = 1
    try:
        from agent.cli import main

        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def _wait(pid: int, timeout: float = 60.0) -> int:
    """Reap `pid`; a process still alive after `timeout` is killed (and its code says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def serve() -> None:
    """The server loop (in the zygote process)."""
    import agent.cli
    import agent.commands.run
    import agent.daemon.wiring  # noqa: F401 - the point: imported once, before any fork

    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "ping":
            answer = "pong"
        elif cmd == "start":
            log, _, argv = rest.partition(" ")
            pid = os.fork()
            if pid == 0:
                _child(log, json.loads(argv))
            os.setpgid(pid, pid)
            answer = f"pid {pid}"
        elif cmd == "wait":
            answer = f"rc {_wait(int(rest))}"
        else:
            answer = f"error {cmd!r}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    os._exit(0)  # the test process is gone or done; nothing here may keep this one alive


if __name__ == "__main__":
    serve()
