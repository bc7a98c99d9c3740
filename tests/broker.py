"""A real Mosquitto broker on a free loopback port, owned by the test that starts it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """The mosquitto executable, or None."""
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@dataclass
class Broker:
    """A running Mosquitto; `stop()` and `start()` simulate an outage on the same port."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    password_file: Path | None = None  # when set: no anonymous clients, only these users
    extra_config: str = ""  # appended to mosquitto.conf, e.g. more (TLS) listeners

    def start(self) -> None:
        """Start (or restart) the broker and wait until it accepts connections."""
        conf = self.workdir / "mosquitto.conf"
        auth = (
            f"allow_anonymous false\npassword_file {self.password_file}\n"
            if self.password_file
            else "allow_anonymous true\n"
        )
        # Started as root, mosquitto drops to its own user, which can neither save its
        # persistence file nor read a password file in pytest's private tmp directory.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{auth}{user}"
            f"persistence true\npersistence_location {self.workdir}/\n"
            "max_inflight_messages 0\nmax_queued_messages 100000\n"
            "message_size_limit 0\n"
            f"{self.extra_config}"
        )
        binary = mosquitto_binary()
        assert binary, "mosquitto is not installed"
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()}"
                )
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGKILL when `kill`)."""
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file for `users` (name -> password), hashed by mosquitto_passwd."""
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is not installed"
    path.write_text("")
    for name, password in users.items():
        subprocess.run([tool, "-b", str(path), name, password], check=True, capture_output=True)
    return path


@contextlib.contextmanager
def running_broker(
    workdir: Path, users: dict[str, str] | None = None, extra_config: str = ""
) -> Iterator[Broker]:
    """Start a broker in `workdir` (only `users` may connect, when given) and stop it afterwards.

    `extra_config` is appended to its mosquitto.conf (e.g. further listeners with TLS).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(port=free_port(), workdir=workdir, extra_config=extra_config)
    if users is not None:
        broker.password_file = write_password_file(workdir / "passwd", users)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
