"""The FUSE server process: `python -m tests.powercut.server BACKING MOUNTPOINT STATE_DIR [--journal]`.

Commands arrive one per line on stdin (freeze, cut, sync, unmount); each answer
is one JSON line on stdout. End of stdin (the test process died) unmounts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mfusepy

from tests.powercut.ops import PowerCutOps

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


class _Fuse(mfusepy.FUSE):
    """mfusepy's FUSE 3 glue, passing the file handle (nullpath_ok) and rename flags through."""

    def _str(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    @staticmethod
    def _fh(fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return self.operations.truncate(self._str(path), length, self._fh(fip))

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return self.operations.chmod(self._str(path), mode, self._fh(fip))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        uid = -1 if uid == 0xFFFFFFFF else uid
        gid = -1 if gid == 0xFFFFFFFF else gid
        return self.operations.chown(self._str(path), uid, gid, self._fh(fip))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            ts = (buf.contents.actime, buf.contents.modtime)
            times = tuple(_resolve_time(t.tv_sec, t.tv_nsec) for t in ts)
        return self.operations.utimens(self._str(path), times, self._fh(fip))

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(self._str(old), self._str(new), flags)


def _resolve_time(sec: int, nsec: int) -> int | None:
    if nsec == _UTIME_NOW:
        return time.time_ns()
    if nsec == _UTIME_OMIT:
        return None
    return sec * 10**9 + nsec


class _Control:
    """The command channel to the test process."""

    def __init__(self, ops: PowerCutOps, mountpoint: str) -> None:
        self.ops = ops
        self.mountpoint = mountpoint
        self._out = threading.Lock()

    def say(self, **msg: Any) -> None:
        with self._out, contextlib.suppress(OSError):  # the test process may be gone
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

    def serve(self) -> None:
        """Answer commands; whatever ends the loop (cut, unmount, end of stdin) ends the mount."""
        try:
            self._loop()
        finally:
            with self.ops.mutex:
                self.ops.dead = True
            self._detach()
            os._exit(0)

    def _loop(self) -> None:
        for line in sys.stdin:
            cmd = line.strip()
            try:
                if cmd == "freeze":
                    with self.ops.mutex:
                        self.ops.dead = True
                    self.say(event="frozen")
                elif cmd == "sync":
                    self.ops.sync_all()
                    self.say(event="synced")
                elif cmd == "cut":
                    report = self.ops.cut()
                    self.say(event="cut", report=dataclasses.asdict(report))
                    return
                elif cmd == "unmount":
                    # a clean shutdown: the backing tree already holds the live state
                    self.say(event="unmounted")
                    return
                else:
                    self.say(event="error", message=f"unknown command {cmd!r}")
            except Exception as exc:  # the test must hear of it, not wait for a timeout
                self.say(event="error", message=f"{cmd}: {exc!r}")

    def _detach(self) -> None:
        """Take the mount away now, even while a killed process still holds files open on it."""
        subprocess.run(["umount", "-l", self.mountpoint], check=False, capture_output=True)
        shutil.rmtree(self.ops.ledger.state_dir, ignore_errors=True)


def main(argv: list[str]) -> None:
    journal = "--journal" in argv
    backing, mountpoint, state_dir = [a for a in argv if a != "--journal"]
    holder: list[_Control] = []
    ops = PowerCutOps(Path(backing), Path(state_dir), lambda: holder[0].say(event="ready"), journal)
    control = _Control(ops, mountpoint)
    holder.append(control)
    threading.Thread(target=control.serve, name="control", daemon=True).start()
    _Fuse(
        ops,
        mountpoint,
        foreground=True,
        nothreads=True,
        allow_other=True,
        default_permissions=True,
        fsname="powercut",
        subtype="powercut",
    )
    # The loop ends when the control thread unmounts; it exits the process once done.
    time.sleep(30)


if __name__ == "__main__":
    main(sys.argv[1:])
