"""[ui]: the dock's status page settings (SPEC 12), and how its listen address is read."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.schema import setting

LISTEN_EXPECTED = "expected HOST:PORT with a port 0-65535 (e.g. 127.0.0.1:8080), or empty"


def split_listen(value: str) -> tuple[str, int] | None:
    """(host, port) of a `[ui] listen` value such as 127.0.0.1:8080 or [::1]:8080; None if bad."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not re.fullmatch(r"[A-Za-z0-9.:-]+", host) or not re.fullmatch(r"\d{1,5}", port):
        return None
    return (host, int(port)) if int(port) <= 65535 else None


@dataclass(frozen=True)
class UiSection:
    """[ui]: the dock's status page for its touchscreen (SPEC 12)."""

    listen: str = setting(
        "127.0.0.1:8080",
        doc="HOST:PORT the status page listens on; empty disables it",
        check=lambda value: None if value == "" or split_listen(value) else LISTEN_EXPECTED,
    )
    language: str = setting("zh-CN", doc="language of the status page", choices=("zh-CN", "en"))
    metrics: bool = setting(True, doc="serve GET /metrics for Prometheus on the status page's port")
