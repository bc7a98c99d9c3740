"""`dock-agent clips`: the clips in the local index."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.evidence.index import ClipIndex
from agent.evidence.record import MANIFEST_FIELDS

STATES = ("offloaded", "synced", "purged")


def add_parser(subparsers: Any) -> None:
    """Register `clips`."""
    parser = subparsers.add_parser("clips", help="clips in the local index")
    add_config_arg(parser)
    parser.add_argument("--device", metavar="ID", help="only clips of this recorder")
    parser.add_argument("--state", choices=STATES, help="only clips in this state")
    parser.add_argument("--json", action="store_true", help="print a JSON array")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """SPEC 3: the MANIFEST fields plus clip_id, state and local_path."""
    keys = (*MANIFEST_FIELDS, "clip_id", "state", "local_path")
    return {k: record.get(k) for k in keys}


def run(args: argparse.Namespace) -> int:
    """Print matching clips, oldest first."""
    cfg = load_config(args.config)
    index = ClipIndex(cfg.data_dir)
    try:
        rows = [
            public(r)
            for r in index.iter_all()
            if (not args.device or r.get("device_id") == args.device)
            and (not args.state or r.get("state") == args.state)
        ]
    finally:
        index.close()
    rows.sort(key=lambda r: (r.get("recorded_start") or "", r.get("file_name") or ""))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    for r in rows:
        flags = ",".join(r.get("flags") or []) or "-"
        print(
            f"{r['clip_id'][:12]}  {r['state']:<9}  {r['device_id']:<12}  "
            f"{r['recorded_start']}  {r['size']:>12}  {flags}  {r['file_name']}"
        )
    print(f"{len(rows)} clips")
    return 0
