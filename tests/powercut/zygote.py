"""Start `dock-agent` processes by fork from one Python that already imported the agent.

A power-cut run restarts the daemon after every cut; importing the agent costs
seconds per start (OpenCV, NumPy), forking costs milliseconds. The child runs
`agent.cli.main(argv)` exactly as the console script does, in its own process group.
Server side: `python -m tests.powercut.zygote` reads `start LOG ARGV-JSON` and
`wait PID` lines, answers `pid N` and `rc N` (negative: killed by that signal).
Nothing outlives the test: the zygote runs in its own session, its children die with it
(PR_SET_PDEATHSIG), and at end of input (the test process gone) it kills what it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_REPO = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


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
            start_new_session=True,  # its own process group: close() can kill all of it
        )
        self._running: set[int] = set()
        self.started: list[int] = []  # every pid ever started, for a check that none is left
        try:
            self._ask_ready()
        except BaseException:
            self._kill()
            raise

    @property
    def pid(self) -> int:
        """The zygote process itself."""
        return self._proc.pid

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

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        """Fork `dock-agent ARGV` (with `env` added) appending stdout and stderr to `log`; its pid."""
        job = json.dumps({"argv": argv, "env": env or {}})
        pid = int(self._ask(f"start {log} {job}").split()[1])
        self._running.add(pid)
        self.started.append(pid)
        return pid

    def wait(self, pid: int) -> int:
        """Reap a started process; its return code (SIGKILLed after 60 s: -9 says it hung)."""
        rc = int(self._ask(f"wait {pid}").split()[1])
        self._running.discard(pid)
        return rc

    def close(self) -> None:
        """Kill what is still running (a failed test leaves no daemon behind), then stop."""
        try:
            for pid in list(self._running):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(RuntimeError, OSError):
                    self.wait(pid)
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
            self._proc.wait(timeout=10)
        finally:
            self._kill()

    def _kill(self) -> None:
        """The zygote's whole process group, whatever state it is in (a no-op once it exited)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        for pid in self._running:  # in their own groups, dying with the zygote (PDEATHSIG)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._running.clear()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent (the zygote) ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the prctl
        os._exit(1)


def _child(log: str, argv: list[str], env: dict[str, str], parent: int) -> None:
    os.setpgid(0, 0)  # also done by the parent: killpg must work from the first instant
    _die_with_parent(parent)
    os.environ.update(env)
    if env.get("POWERCUT_BREAK"):  # the test of the test: a deliberately broken agent
        from tests.powercut.broken import BREAKS

        BREAKS[env["POWERCUT_BREAK"]]()
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

    started: set[int] = set()
    me = os.getpid()
    try:
        for line in sys.stdin:
            cmd, _, rest = line.strip().partition(" ")
            if cmd == "ping":
                answer = "pong"
            elif cmd == "start":
                log, _, job = rest.partition(" ")
                spec = json.loads(job)
                pid = os.fork()
                if pid == 0:
                    _child(log, spec["argv"], spec["env"], me)
                os.setpgid(pid, pid)
                started.add(pid)
                answer = f"pid {pid}"
            elif cmd == "wait":
                answer = f"rc {_wait(int(rest))}"
                started.discard(int(rest))
            else:
                answer = f"error {cmd!r}"
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        for pid in started:  # the test process is gone or done: nothing it started stays
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(0)


if __name__ == "__main__":
    serve()
