"""`dock-agent clips`: the clips in the local index."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.evidence.index.snapshot import IndexSnapshot
from agent.evidence.lifecycle import STATES, state_of
from agent.evidence.record import MANIFEST_FIELDS


def add_parser(subparsers: Any) -> None:
    """Register `clips`."""
    parser = subparsers.add_parser(
        "clips",
        help="list the clips this dock holds or has held",
        description="List the clips in the dock's index, oldest recording first: id (sha256),\n"
        "state (offloaded: on the dock, not yet at central; synced: central has it; purged:\n"
        "the local copy is gone), recorder, start time, size, flags and file name. Read-only:\n"
        "an empty or missing data directory lists 0 clips and creates nothing.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument("--device", metavar="ID", help="only clips of this recorder (device id)")
    parser.add_argument("--state", choices=STATES, help="only clips in this state (default: all)")
    parser.add_argument(
        "--json", action="store_true", help="print a JSON array with every MANIFEST field"
    )


def public(record: dict[str, Any]) -> dict[str, Any]:
    """SPEC 3: the MANIFEST fields plus clip_id, state and local_path."""
    keys = (*MANIFEST_FIELDS, "clip_id", "state", "local_path")
    return {k: record.get(k) for k in keys}


def run(args: argparse.Namespace) -> int:
    """Print matching clips, oldest first."""
    cfg = load_config(args.config)
    rows = [
        public(r)
        for r in IndexSnapshot.read(cfg.data_dir).iter_all()
        if (not args.device or r.get("device_id") == args.device)
        and (not args.state or state_of(r) == args.state)
    ]
    rows.sort(key=lambda r: (r.get("recorded_start") or "", r.get("file_name") or ""))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    for r in rows:
        flags = ",".join(r.get("flags") or []) or "-"
        print(
            f"{r['clip_id'][:12]}  {state_of(r):<9}  {r['device_id']:<12}  "
            f"{r['recorded_start']}  {r['size']:>12}  {flags}  {r['file_name']}"
        )
    print(f"{len(rows)} clips")
    return 0
