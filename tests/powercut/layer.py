"""The test side: mount a power-cut layer, cut its power, kill the processes that used it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.powercut.restore import CutReport

_REPO = Path(__file__).resolve().parents[2]


def fuse_unavailable() -> str | None:
    """Why a power-cut layer cannot be mounted here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "FUSE power-cut layer: Linux only"
    if os.geteuid() != 0:
        return "FUSE power-cut layer: needs root (mounts with allow_other, owns files for callers)"
    if not os.path.exists("/dev/fuse"):
        return "FUSE power-cut layer: /dev/fuse is missing (modprobe fuse)"
    if shutil.which("fusermount3") is None:
        return "FUSE power-cut layer: fusermount3 is missing (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return (
            f"FUSE power-cut layer: mfusepy/libfuse3 unusable ({exc}); run scripts/setup.sh --dev"
        )
    return None


class PowerCutFS:
    """A FUSE mount of `backing_dir` at `mountpoint` whose power can be cut (see the package doc)."""

    def __init__(
        self,
        backing_dir: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        journal: bool = False,
    ) -> None:
        self.journal = journal
        self.backing = Path(backing_dir).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        # Beside the backing tree: pinned inodes are hard links, so it must be the same file system.
        self.state_dir = self.backing.parent / f".{self.backing.name}.powercut"
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.server_pid: int | None = None  # the last server started, for a check that it is gone

    @property
    def mounted(self) -> bool:
        return self._proc is not None

    def mount(self, timeout: float = 15.0) -> None:
        """Mount; everything the backing tree holds now counts as durable."""
        if self._proc is not None:
            raise RuntimeError(f"{self.mountpoint} is already mounted")
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if os.stat(self.backing).st_dev != os.stat(self.backing.parent).st_dev:
            raise ValueError(f"{self.backing} must not be a mount point (state lives beside it)")
        env = dict(os.environ, PYTHONPATH=str(_REPO))
        self._buf = b""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.powercut.server"]
            + [str(self.backing), str(self.mountpoint), str(self.state_dir)]
            + (["--journal"] if self.journal else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_REPO,
            env=env,
            start_new_session=True,  # its own process group: close() can kill all of it
        )
        self.server_pid = self._proc.pid
        try:
            self._expect("ready", timeout)
            deadline = time.monotonic() + timeout
            while not os.path.ismount(self.mountpoint):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.mountpoint} did not appear as a mount")
                time.sleep(0.01)
        except BaseException:
            self._kill_server()
            raise

    def sync(self) -> None:
        """As sync(2) would: everything written so far becomes durable."""
        self._send("sync")
        self._expect("synced")

    def freeze(self) -> None:
        """The instant of the cut: every later operation fails with EIO (cut() still to follow)."""
        self._send("freeze")
        self._expect("frozen")

    def cut(self, timeout: float = 60.0) -> CutReport:
        """Power cut: drop everything not durable from the backing tree, and take the mount away."""
        self._send("cut")
        msg = self._expect("cut", timeout)
        self._reap()
        return CutReport(**msg["report"])

    def kill_and_cut(self, *procs: subprocess.Popen[Any] | int) -> CutReport:
        """SIGKILL the processes using the mount, then cut: the power went for all of them at once."""
        return power_cut([self], procs)[0]

    def unmount(self, timeout: float = 30.0) -> None:
        """Clean shutdown: the backing tree keeps everything written, durable or not."""
        if self._proc is None:
            return
        self._send("unmount")
        self._expect("unmounted", timeout)
        self._reap()

    def close(self) -> None:
        """End of a test, passed or failed: no server process and no mount left, whatever state."""
        try:
            self.unmount(timeout=10)
        except Exception:
            self._kill_server()
        if os.path.ismount(self.mountpoint):  # a server that died on its own leaves its mount
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)

    def __enter__(self) -> PowerCutFS:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            try:
                self.unmount()
            except Exception:
                self.close()
                if exc is None:
                    raise

    # the channel to the server process
    def _send(self, cmd: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError(f"{self.mountpoint} is not mounted")
        self._proc.stdin.write(cmd.encode() + b"\n")
        self._proc.stdin.flush()

    def _expect(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"power-cut layer at {self.mountpoint}: no {event!r} answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"power-cut layer at {self.mountpoint} exited before {event!r}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        if msg.get("event") != event:
            raise RuntimeError(f"power-cut layer at {self.mountpoint}: {msg} (wanted {event!r})")
        return msg

    def _reap(self) -> None:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill_server()
        for f in (self._proc.stdin, self._proc.stdout):
            if f is not None:
                f.close()
        self._proc = None

    def _kill_server(self) -> None:
        if self._proc is None:
            return
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._proc = None


def power_cut(
    layers: Iterable[PowerCutFS], procs: Iterable[subprocess.Popen[Any] | int] = ()
) -> list[CutReport]:
    """One power cut for several mounts and the processes using them: kill, freeze all, then cut."""
    layers, procs = list(layers), list(procs)
    for p in procs:
        try:
            os.kill(p if isinstance(p, int) else p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for layer in layers:
        layer.freeze()
    reports = [layer.cut() for layer in layers]
    for p in procs:
        if not isinstance(p, int):
            p.wait(timeout=30)
    return reports
