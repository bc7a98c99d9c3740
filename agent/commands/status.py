"""`dock-agent status`: dock, bays, queue, backlog and alerts, from the local state."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.cli import add_config_arg
from agent.config import DockConfig, load_config
from agent.ui.status import read_status


def add_parser(subparsers: Any) -> None:
    """Register `status`."""
    parser = subparsers.add_parser(
        "status",
        help="what the dock is doing: bays, sync queue, alerts",
        description="Show each bay (empty, offloading, charging, ready, fault and why), the\n"
        "clips still waiting to reach the central server, active alerts and the custody log's\n"
        "head. Reads the files the daemon keeps, so it works while the daemon runs, and writes\n"
        "nothing; without a daemon it shows the last known state.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the status as JSON (for scripts)"
    )


def collect(cfg: DockConfig) -> dict[str, Any]:
    """The dock's status from the files the daemon keeps (works while it runs)."""
    return read_status(cfg)


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
    lines.append(f"key: {status.get('key_fingerprint') or 'none yet (made at first start)'}")
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
