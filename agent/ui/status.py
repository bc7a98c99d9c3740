"""The dock's status document: what `dock-agent status --json` prints and the page's /api/status."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agent.config import DockConfig
from agent.evidence.custody import read_head
from agent.evidence.index.snapshot import IndexSnapshot
from agent.trust.dock import dock_fingerprint


class IndexView(Protocol):
    """What the status needs of an index: ClipIndex in the daemon, IndexSnapshot in a command."""

    def stats(self) -> dict[str, Any]: ...

    def active(self) -> list[dict[str, Any]]: ...


class CustodyHead(Protocol):
    """What the status needs of the custody log."""

    def head(self) -> tuple[int, str]: ...


def dock_status(cfg: DockConfig, index: IndexView, custody: CustodyHead) -> dict[str, Any]:
    """The status from the daemon's state file, the clip index and the custody log."""
    state = _read_json(cfg.data_dir / "state" / "bays.json")
    stats = index.stats()
    seq, head = custody.head()
    oldest = stats.get("oldest_unsynced_offloaded_at")
    age = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest else None
    bays = state.get("bays", {})
    return {
        "dock_id": cfg.dock.id,
        "daemon_started_at": state.get("started_at"),
        "daemon_running": _alive(state.get("pid")),
        "bays": {str(b.number): bays.get(str(b.number), {"state": "unknown"}) for b in cfg.bay},
        "queue": {
            "clips": stats["unsynced_clips"],
            "bytes": stats["unsynced_bytes"],
            "oldest_unsynced_age_s": round(age, 1) if age is not None else None,
        },
        "last_synced_at": _last_synced(index),
        "active_clips": stats["active_clips"],
        "alerts": state.get("alerts", []),
        "custody_head": {"seq": seq, "hash": head},
        "key_fingerprint": dock_fingerprint(cfg),
    }


class _HeadOnDisk:
    """The custody head read from the file (nothing opened for writing, nothing created)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def head(self) -> tuple[int, str]:
        return read_head(self.path)


def read_status(cfg: DockConfig) -> dict[str, Any]:
    """The status read from disk by another process (works while the daemon runs; read-only)."""
    index = IndexSnapshot.read(cfg.data_dir)
    return dock_status(cfg, index, _HeadOnDisk(cfg.data_dir / "custody.jsonl"))


def _last_synced(index: IndexView) -> str | None:
    """When central last acknowledged a clip (synced records stay active until purged)."""
    times = [str(r["synced_at"]) for r in index.active() if r.get("synced_at")]
    return max(times, key=datetime.fromisoformat) if times else None


def _alive(pid: Any) -> bool:
    """Whether the daemon that wrote the state file still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
