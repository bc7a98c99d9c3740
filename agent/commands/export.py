"""`dock-agent export`: an evidence copy with its statement, registered in the custody log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.evidence.custody import CustodyLog
from agent.evidence.export import (
    ExportFailed,
    ExportRefused,
    ExportResult,
    Request,
    check_request,
    export_clip,
)
from agent.evidence.index import ClipIndex


def add_parser(subparsers: Any) -> None:
    """Register `export CLIP_ID --out DIR --operator NAME --approval REF --reason TEXT`."""
    parser = subparsers.add_parser(
        "export",
        help="an evidence copy of a clip with its statement (logged in custody)",
        description="Copy one clip out of the dock for a case: the copy is verified against its\n"
        "SHA-256, a statement (who made the recording, who extracts it, when, the hash) is\n"
        "written beside it as .txt and .json, and the export is logged in the custody log.\n"
        "All four options are required: an export needs an approval and a reason.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument(
        "clip_id", metavar="CLIP_ID", help="the clip's sha256, or a unique prefix of 8 or more"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="directory to write the copy to (made if needed)",
    )
    parser.add_argument("--operator", metavar="NAME", required=True, help="who extracts the copy")
    parser.add_argument(
        "--approval", metavar="REF", required=True, help="reference of the approval to copy"
    )
    parser.add_argument("--reason", metavar="TEXT", required=True, help="why the copy is made")


def _request(args: argparse.Namespace) -> Request:
    if not str(args.out).strip():
        raise ExportRefused("refused: --out DIR required")
    req = Request(args.clip_id, Path(args.out), args.operator, args.approval, args.reason)
    check_request(req)
    return req


def _report(result: ExportResult) -> None:
    st = result.statement
    print(f"exported {st['file_name']} ({st['size']} bytes, sha256 {st['sha256']})")
    print(f"  copy       {result.copy}")
    print(f"  statement  {result.statement_txt}")
    print(f"             {result.statement_json}")
    print(f"  custody    exported seq {result.entry['seq']} hash {result.entry['hash']}")


def run(args: argparse.Namespace) -> int:
    """0 exported; 1 unknown/purged clip or a failed copy; 2 refused (nothing written)."""
    try:
        req = _request(args)
    except ExportRefused as exc:
        print(f"dock-agent export: {exc}", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    index = ClipIndex(cfg.data_dir)
    custody = CustodyLog(cfg.data_dir / "custody.jsonl")
    try:
        _report(export_clip(index, custody, cfg, req))
    except ExportRefused as exc:
        print(f"dock-agent export: {exc}", file=sys.stderr)
        return 2
    except (ExportFailed, OSError) as exc:
        print(f"dock-agent export: {exc}", file=sys.stderr)
        return 1
    finally:
        custody.close()
        index.close()
    return 0
