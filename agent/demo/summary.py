"""The readable summary printed at the end of `dock-agent demo`."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.daemon.runtime import Daemon
from agent.evidence.lifecycle import state_of

Holder = Callable[[Path, dict[str, Any]], Path | None]


def summary(
    scene: Any,
    daemon: Daemon,
    records: list[dict[str, Any]],
    holds: Holder,
    page: str | None = None,
) -> tuple[str, bool]:
    """The summary text, and whether every clip arrived at central intact."""
    lines = ["", "=" * 78, "dock-agent demo: what happened", "=" * 78, "", "BAYS"]
    lines += [_bay(n, w.view) for n, w in sorted(daemon.bays.items())]
    lines += ["", f"CLIPS ({len(records)}): offloaded, hashed, verified, sent upstream"]
    arrived = [holds(scene.store, r) for r in records]
    lines += [_clip(r, a) for r, a in zip(records, arrived, strict=True)]
    assert daemon.parts is not None
    notes = daemon.parts.notes.list()
    lines += ["", f"NOTES ({len(notes)}): for people to explain"]
    lines += [_note(n.to_json()) for n in notes]
    seq, head = daemon.services.custody.head()
    lines += [
        "",
        "WHERE THINGS ARE",
        f"  dock evidence store : {daemon.services.store.root}",
        f"  custody log         : {daemon.cfg.data_dir / 'custody.jsonl'} ({seq} entries, head {head[:16]}...)",
        f"  central receiver    : {scene.store / 'demo-dock'}",
        f"  dock configuration  : {scene.root / 'dock.toml'}",
        f"  status page         : {page or 'not served'}"
        + ("  (--keep serves it after this summary)" if page else ""),
        "",
        "TRY",
        f"  {_exe()} status -c {scene.root / 'dock.toml'}",
        f"  {_exe()} clips -c {scene.root / 'dock.toml'}",
        f"  {_exe()} verify -c {scene.root / 'dock.toml'}",
        f"  {_exe()} notes list -c {scene.root / 'dock.toml'}",
    ]
    ok = all(arrived)
    lines += [
        "",
        "RESULT: "
        + ("every clip is at central, byte for byte" if ok else "SOME CLIPS DID NOT ARRIVE INTACT"),
    ]
    return "\n".join(lines), ok


def _exe() -> str:
    """How to run dock-agent from here: the venv's script when it is not on PATH."""
    beside = Path(sys.executable).parent / "dock-agent"
    if shutil.which("dock-agent") == str(beside) or not beside.exists():
        return "dock-agent"
    return str(beside)


def _bay(number: int, view: Any) -> str:
    clock = f", clock was {view.clock_offset_s:+.1f} s off" if view.clock_offset_s else ""
    battery = f"battery {view.battery_pct:.0f}%" if view.battery_pct is not None else ""
    text = f"  bay {number}: {view.state.upper():<9} {view.device_id or '-'}  {battery}{clock}"
    notable = [
        f.message for f in view.findings if f.severity != "info" or f.code == "clock_corrected"
    ]
    return text + "".join(f"\n          - {m}" for m in notable)


def _clip(r: dict[str, Any], arrived: Path | None) -> str:
    when = datetime.fromisoformat(r["recorded_start"]).astimezone().strftime("%m-%d %H:%M:%S")
    flags = ",".join(r["flags"]) or "-"
    size = f"{r['size'] / 1000:.0f} kB"
    where = "at central, hash ok" if arrived else "NOT at central"
    return (
        f"  {when}  {r['file_name']:<44} {size:>8}  {r['sha256'][:12]}  "
        f"{state_of(r):<7} {flags:<24} {where}"
    )


def _note(n: dict[str, Any]) -> str:
    when = datetime.fromisoformat(n["start"]).astimezone().strftime("%m-%d %H:%M:%S")
    return (
        f"  {n['note_id']}  {n['type']:<15} {n['device_id']}  {when}  "
        f"{n['duration_s']:>6.1f} s  cause {n['cause']}"
    )
