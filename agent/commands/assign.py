"""`dock-agent assign BAY --officer ID`: bind the recorder in a bay to an officer (SPEC 5)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.daemon.requests import RequestFailed, submit
from agent.dock.assign import AssignRefused, parse_assignment


def add_parser(subparsers: Any) -> None:
    """Register `assign BAY --officer ID [--name NAME] [--unit NO]`."""
    parser = subparsers.add_parser(
        "assign",
        help="issue the recorder docked in BAY to an officer (zfy recorders)",
        description="Write an officer's id (and name, unit) into the GA/T 947 (zfy) recorder\n"
        "docked in bay BAY, so its next clips are filed under that officer. The running\n"
        "daemon does it (it owns the recorder's SDK): refused while the recorder still has\n"
        "clips to offload, logged in the custody log as recorder_assigned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument("bay", metavar="BAY", type=int, help="bay number")
    parser.add_argument("--officer", required=True, help="officer id (警号), letters and digits")
    parser.add_argument("--name", default="", help="officer name (GBK, at most 32 bytes)")
    parser.add_argument(
        "--unit", default=None, help="unit number (default: the recorder's current unit)"
    )


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run(args: argparse.Namespace) -> int:
    """0 written; 1 refused or failed by the daemon (or none running); 2 bad usage."""
    cfg = load_config(args.config)
    payload: dict[str, Any] = {"bay": args.bay, "officer": args.officer, "name": args.name}
    if args.unit is not None:
        payload["unit"] = args.unit
    bays = {b.number: b.kind for b in cfg.bay}
    try:
        parse_assignment(payload)
        if bays.get(args.bay) != "zfy":
            raise AssignRefused(
                f"bay {args.bay} is not a zfy bay in {args.config or 'the configuration'} "
                f"(zfy bays: {', '.join(str(n) for n, k in bays.items() if k == 'zfy') or 'none'})"
            )
    except AssignRefused as exc:
        print(f"dock-agent assign: refused: {exc}", file=sys.stderr)
        return 2
    try:
        done = submit(cfg.data_dir, "assign", payload, _who())
    except RequestFailed as exc:
        print(f"dock-agent assign: {exc}", file=sys.stderr)
        return 1
    name = f" {done['officer_name']}" if done.get("officer_name") else ""
    unit = f", unit {done['unit_no']}" if done.get("unit_no") else ""
    print(
        f"bay {done['bay']}: recorder {done['device_id']} assigned to officer "
        f"{done['officer_id']}{name}{unit} (was {done.get('previous_officer_id') or 'none'}; "
        f"custody seq {done['custody_seq']})"
    )
    return 0
