"""`dock-agent status`: dock, bays, queue, backlog and alerts, from the local state."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli import add_config_arg
from agent.config import DockConfig, load_config
from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex


def add_parser(subparsers: Any) -> None:
    """Register `status`."""
    parser = subparsers.add_parser("status", help="dock, bays, queue, alerts")
    add_config_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")


def collect(cfg: DockConfig) -> dict[str, Any]:
    """The dock's status from the files the daemon keeps (works while it runs)."""
    state_file = cfg.data_dir / "state" / "bays.json"
    state = _read_json(state_file)
    index = ClipIndex(cfg.data_dir)
    try:
        stats = index.stats()
    finally:
        index.close()
    custody = CustodyLog(cfg.data_dir / "custody.jsonl")
    seq, head = custody.head()
    custody.close()
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
        "active_clips": stats["active_clips"],
        "alerts": state.get("alerts", []),
        "custody_head": {"seq": seq, "hash": head},
    }


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


def run(args: argparse.Namespace) -> int:
    """Print the status as text or JSON."""
    status = collect(load_config(args.config))
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
        return 0
    print(render(status))
    return 0


def render(status: dict[str, Any]) -> str:
    """A readable multi-line summary for people at the dock."""
    started = status["daemon_started_at"] or "never"
    running = "running" if status["daemon_running"] else "NOT RUNNING; last known state"
    lines = [f"dock {status['dock_id']}  (daemon {running}, started {started})"]
    for number, bay in status["bays"].items():
        lines.append(_bay_line(number, bay))
    q = status["queue"]
    age = f", oldest {q['oldest_unsynced_age_s']:.0f} s" if q["oldest_unsynced_age_s"] else ""
    lines.append(f"sync queue: {q['clips']} clips, {q['bytes'] / 1e6:.1f} MB{age}")
    for alert in status["alerts"]:
        lines.append(f"ALERT {alert['code']} ({alert['severity']}): {alert['message']}")
    head = status["custody_head"]
    lines.append(f"custody log: {head['seq']} entries, head {head['hash'][:16]}")
    return "\n".join(lines)


def _bay_line(number: str, bay: dict[str, Any]) -> str:
    state = bay.get("state", "unknown")
    text = f"bay {number}: {state.upper()}"
    if bay.get("device_id"):
        text += f"  {bay['device_id']} (officer {bay.get('officer_id') or '?'})"
    p = bay.get("progress") or {}
    if state == "offloading" and p:
        text += f"  {p['clips_done']}/{p['clips_total']} clips, {p['bytes_done'] / 1e6:.0f}/{p['bytes_total'] / 1e6:.0f} MB"
    if bay.get("battery_pct") is not None:
        text += f"  battery {bay['battery_pct']:.0f}%"
    shown = ("fault", "warning", "info") if state == "identifying" else ("fault", "warning")
    why = [f["message"] for f in bay.get("findings", []) if f.get("severity") in shown]
    if why and state != "ready":
        text += "\n    " + "\n    ".join(why)
    return text
