"""One transfer's persisted state: its fixed init payload and the acknowledged segment offsets."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from agent import durable

logger = logging.getLogger(__name__)


class ResumeState:
    """What (client id, file id) was sent as, and which offsets the receiver acknowledged.

    The init payload is fixed at the first attempt: EMQX refuses a differing re-init
    (`filemeta_conflict`, SPEC 7.1), and so does `dock-agent receive` for a file it holds. Once
    the transfer is done only the init stays, in `{state_dir}/done/`, so that sending the file
    again (a crash before the ack was recorded, a resync) sends the same payload; `prune_done`
    removes it when its `expire_at` has passed. Acknowledged offsets older than `ttl_s` (the
    init's `segments_ttl`) are forgotten: the broker may have collected them.
    """

    def __init__(
        self, path: Path, key: dict[str, Any], interval_s: float = 1.0, ttl_s: float = 0.0
    ) -> None:
        self.path = path
        self.key = key  # client_id, file_id, size; and segment_bytes, which only the offsets need
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.acked: set[int] = set()
        self.init: bytes | None = None
        self.acked_since: float | None = None  # wall time of the oldest acknowledgement kept
        self._saved_at = 0.0
        self._dirty = False
        self._writing = threading.Lock()
        self._taken = self._written = 0
        self._thread: threading.Thread | None = None
        self._finished = False  # no background write may bring back a finished state

    @classmethod
    def load(
        cls, state_dir: Path, key: dict[str, Any], interval_s: float = 1.0, ttl_s: float = 0.0
    ) -> ResumeState:
        """The saved state for `key`, or an empty one when none matches."""
        tag = hashlib.sha256(str(key["client_id"]).encode()).hexdigest()[:12]
        state = cls(state_dir / f"{key['file_id']}.{tag}.json", key, interval_s, ttl_s)
        saved = _read(state.path)
        if saved is None:  # not in progress: sent before, perhaps
            done = _read(state.done_path)
            if isinstance(done, dict) and done.get("key") == _identity(key):
                state.init = _init(done.get("init"))
            return state
        saved_key = saved.get("key") if isinstance(saved, dict) else None
        if not isinstance(saved_key, dict) or _differs(saved_key, key, "segment_bytes"):
            return state
        state.init = _init(saved.get("init"))
        since = saved.get("acked_since")
        offsets = saved.get("acked", [])
        if saved_key != key or not isinstance(since, int | float) or not isinstance(offsets, list):
            state._dirty = True  # other segment size: only the init payload carries over
            return state
        if ttl_s and time.time() - since > ttl_s:
            logger.info(
                "%s: acknowledged segments older than %.0f s; resending all", key["file_id"], ttl_s
            )
            state._dirty = True
            return state
        state.acked = {o for o in offsets if isinstance(o, int) and o >= 0}
        state.acked_since = float(since)
        logger.info(
            "resuming %s: %s segments already acknowledged", key["file_id"], len(state.acked)
        )
        return state

    def fix_init(self, payload: bytes) -> bytes:
        """The transfer's init payload: the saved one, else `payload`, saved now (durably)."""
        if self.init is None:
            self.init = payload
            self._dirty = True
            self.save()
        return self.init

    def ack(self, offset: int) -> None:
        """Record one acknowledged segment; saved now if the interval has passed."""
        if self.acked_since is None:
            self.acked_since = time.time()
        self.acked.add(offset)
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.interval_s and not self._writing.locked():
            # In the background: an fsync (0.1 s on a busy disk) must not stall the pipeline;
            # acknowledgements not yet durable at a crash only mean those segments go again.
            self._saved_at = time.monotonic()
            self._dirty = False
            self._thread = threading.Thread(target=self._write, args=self._body(), daemon=True)
            self._thread.start()

    def save(self) -> None:
        """Write the state durably if it changed; a background write is waited for."""
        if self._thread is not None:
            self._thread.join()
        if not self._dirty:
            return
        self._write(*self._body())
        self._saved_at = time.monotonic()
        self._dirty = False

    def _body(self) -> tuple[int, dict[str, Any]]:
        """A snapshot to write, numbered: a slow background write never overwrites a newer one."""
        self._taken += 1
        body: dict[str, Any] = {"key": self.key, "acked": sorted(self.acked)}
        body["acked_since"] = self.acked_since
        if self.init is not None:
            body["init"] = self.init.decode("utf-8")
        return self._taken, body

    def _write(self, number: int, body: dict[str, Any]) -> None:
        with self._writing:
            if not self._finished and number > self._written:
                durable.write_json(self.path, body)
                self._written = number

    def reset(self) -> None:
        """Forget every acknowledgement (after a failed fin: resend all); the init stays."""
        self.acked.clear()
        self.acked_since = None
        self._dirty = True
        self.save()

    @property
    def done_path(self) -> Path:
        """Where the init of a finished transfer is kept."""
        return self.path.parent / DONE_DIR / self.path.name

    def finish(self) -> None:
        """The transfer is complete: keep only its init payload (in `done/`)."""
        with self._writing:
            self._finished = True
        if self.init is not None:
            durable.make_dirs(self.done_path.parent)
            body = {"key": _identity(self.key), "init": self.init.decode("utf-8")}
            durable.write_json(self.done_path, body)
        self.path.unlink(missing_ok=True)


DONE_DIR = "done"


def prune_done(state_dir: Path, now: float | None = None) -> int:
    """Remove the kept inits whose `expire_at` has passed; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    for path in (state_dir / DONE_DIR).glob("*.json"):
        body = _read(path)
        try:
            expire_at = (
                json.loads(body["init"]).get("expire_at") if isinstance(body, dict) else None
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            expire_at = None
        if not isinstance(expire_at, int | float) or expire_at < now:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _init(text: Any) -> bytes | None:
    """A saved init payload, if it is a JSON object (a damaged one would be refused forever)."""
    if not isinstance(text, str) or not isinstance(_loads(text), dict):
        return None
    return text.encode("utf-8")


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _identity(key: dict[str, Any]) -> dict[str, Any]:
    """The part of a key that names the transfer (not how it is cut into segments)."""
    return {k: v for k, v in key.items() if k != "segment_bytes"}


def _differs(a: dict[str, Any], b: dict[str, Any], but: str) -> bool:
    """True when `a` and `b` differ in any key other than `but`."""
    keys = (set(a) | set(b)) - {but}
    return any(a.get(k) != b.get(k) for k in keys)
