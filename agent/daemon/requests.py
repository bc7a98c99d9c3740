"""Requests from the local CLI to the running daemon, as files in {data_dir}/requests/.

The daemon owns what only one process may drive (the recorder SDK talks to "the" connected
recorder), so a CLI command that needs it asks the daemon. Files, not MQTT: the dock must be
operable at the bay with its uplink or broker down, and the broker's ACL lets only IT publish
commands (SPEC 11); not a socket: the data directory's permissions already say who may act
on this dock (as for `hold`), and nothing new listens.

    CLI     writes {id}.json {"command", "payload", "by", "ts"} atomically (temp, rename)
    daemon  claims it by renaming it to {id}.taken (so a withdrawn request never runs),
            runs the handler (its `check` first), writes {id}.reply.json, removes {id}.taken
    CLI     reads and removes the reply. When no daemon claimed the request in time, the CLI
            withdraws it: its unlink succeeding proves the request never ran.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.durable import make_dirs, write_json
from firmware_interface.base import RecorderError

logger = logging.getLogger(__name__)

REQUEST_DIR = "requests"
NAME_RE = re.compile(r"([0-9a-f]{32})\.json")
MAX_REQUEST = 64 * 1024
STALE_S = 3600.0  # replies nobody collected (the CLI was killed) are removed after this
Handler = Callable[..., dict[str, Any]]  # handler(payload, by=...) -> result


class RequestFailed(Exception):
    """The daemon refused or failed the request, or never took it; the message says which."""


def serve_one(raw: bytes, handlers: Mapping[str, Handler]) -> dict[str, Any]:
    """The reply to one request file's bytes: {"ok": true, "result"} or {"ok": false, "error"}."""
    try:
        if len(raw) > MAX_REQUEST:
            raise ValueError(f"request of {len(raw)} bytes exceeds {MAX_REQUEST}")
        request = json.loads(raw.decode("utf-8"))
        if not isinstance(request, dict) or not isinstance(request.get("payload"), dict):
            raise ValueError("a request is a JSON object with a payload object")
        command, by = request.get("command"), str(request.get("by") or "cli")[:128]
        handler = handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            raise ValueError(f"unknown command {command!r:.40}; known: {', '.join(handlers)}")
        check = getattr(handler, "check", None)
        if check is not None:
            check(request["payload"])
        return {"ok": True, "result": handler(request["payload"], by=by)}
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": str(exc)}
    except RecorderError as exc:
        return {"ok": False, "error": str(exc), "code": exc.code}
    except Exception:
        logger.exception("local request failed")
        return {"ok": False, "error": "internal error; see the journal"}


class RequestQueue:
    """Daemon side: takes request files and answers them, one at a time, on its own thread."""

    def __init__(self, data_dir: Path, handlers: Mapping[str, Handler], poll_s: float = 0.2):
        self.dir = data_dir / REQUEST_DIR
        self.handlers = handlers
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="requests", daemon=True)

    def start(self) -> None:
        """Create the directory (the CLI needs it to exist) and start serving."""
        make_dirs(self.dir)
        self.orphans()
        self._thread.start()

    def orphans(self) -> int:
        """Answer requests a previous daemon took and never answered (it stopped meanwhile)."""
        found = 0
        for taken in self.dir.glob("*.taken"):
            reply = {
                "ok": False,
                "error": "the daemon stopped before answering; whether it was done shows in "
                "the custody log and `dock-agent status`",
            }
            write_json(self.dir / f"{taken.stem}.reply.json", reply, mode=0o644)
            taken.unlink(missing_ok=True)
            found += 1
        return found

    def stop(self) -> None:
        """Finish the request in progress and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(40)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # a bad file must not end local requests for good
                logger.exception("requests: serving %s failed", self.dir)

    def poll(self) -> int:
        """Serve every waiting request; how many were served."""
        served = 0
        for path in sorted(self.dir.iterdir()):
            match = NAME_RE.fullmatch(path.name)
            if match:
                served += self._serve(match.group(1))
            elif path.name.endswith(".reply.json") and _age(path) > STALE_S:
                path.unlink(missing_ok=True)
        return served

    def _serve(self, rid: str) -> int:
        taken = self.dir / f"{rid}.taken"
        try:
            os.rename(self.dir / f"{rid}.json", taken)
        except FileNotFoundError:
            return 0  # withdrawn meanwhile
        reply = serve_one(taken.read_bytes(), self.handlers)
        write_json(self.dir / f"{rid}.reply.json", reply, mode=0o644)
        taken.unlink(missing_ok=True)
        return 1


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def submit(
    data_dir: Path,
    command: str,
    payload: dict[str, Any],
    by: str,
    claim_s: float = 5.0,
    answer_s: float = 60.0,
) -> dict[str, Any]:
    """CLI side: ask the daemon; its result, or RequestFailed saying why not."""
    folder = data_dir / REQUEST_DIR
    if not folder.is_dir():
        raise RequestFailed(f"the daemon has not run with this data_dir ({folder} is missing)")
    rid = uuid.uuid4().hex
    request, reply = folder / f"{rid}.json", folder / f"{rid}.reply.json"
    ts = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(request, {"command": command, "payload": payload, "by": by, "ts": ts}, 0o644)
    start = time.monotonic()
    while not reply.exists():
        waited = time.monotonic() - start
        if waited > claim_s and request.exists():
            try:
                request.unlink()
            except FileNotFoundError:
                continue  # taken just now
            raise RequestFailed(
                f"the daemon did not take the request within {claim_s:.0f} s; nothing was done "
                "(is it running? systemctl status dock-agent)"
            )
        if waited > claim_s + answer_s:
            raise RequestFailed(
                f"the daemon took the request but gave no answer within {answer_s:.0f} s; "
                "see its journal (journalctl -u dock-agent)"
            )
        time.sleep(0.05)
    answer = json.loads(reply.read_text(encoding="utf-8"))
    reply.unlink(missing_ok=True)
    if not answer.get("ok"):
        raise RequestFailed(str(answer.get("error")))
    result: dict[str, Any] = answer.get("result") or {}
    return result
