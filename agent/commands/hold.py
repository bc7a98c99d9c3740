"""`dock-agent hold`: keep (or stop keeping) a local copy past retention; logged in custody."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.evidence.custody import CustodyLog
from agent.evidence.export import ExportFailed, ExportRefused, resolve_clip
from agent.evidence.index import ClipIndex
from agent.evidence.retention.holds import HoldError, set_hold


def add_parser(subparsers: Any) -> None:
    """Register `hold CLIP_ID --reason TEXT [--release]`."""
    parser = subparsers.add_parser(
        "hold",
        help="keep (or --release) a clip's local copy past local retention",
        description="Keep the dock's copy of a clip after central has it and its retention\n"
        "ran out (e.g. for a complaint), until released with --release. Logged in the custody\n"
        "log with the reason.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument(
        "clip_id", metavar="CLIP_ID", help="the clip's sha256, or a unique prefix of 8 or more"
    )
    parser.add_argument(
        "--reason", metavar="TEXT", required=True, help="why (e.g. the case or complaint number)"
    )
    parser.add_argument("--release", action="store_true", help="stop holding the copy")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def run(args: argparse.Namespace) -> int:
    """0 done; 1 unknown or purged clip; 2 bad usage (no reason, malformed id)."""
    if not args.reason.strip():
        print("dock-agent hold: refused: --reason required", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    index = ClipIndex(cfg.data_dir)
    custody = CustodyLog(cfg.data_dir / "custody.jsonl")
    try:
        record = resolve_clip(index, args.clip_id)
        done = set_hold(index, custody, record["clip_id"], args.reason, args.release, _who())
    except ExportRefused as exc:
        print(f"dock-agent hold: {exc}", file=sys.stderr)
        return 2
    except (ExportFailed, HoldError) as exc:
        print(f"dock-agent hold: {exc}", file=sys.stderr)
        return 1
    finally:
        custody.close()
        index.close()
    verb = "held" if done["held"] else "released"
    print(f"clip {done['clip_id']} {verb} (custody hold seq {done['custody_seq']})")
    return 0
