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
        "export", help="evidence copy of a clip with a statement (logged in custody)"
    )
    add_config_arg(parser)
    parser.add_argument("clip_id", metavar="CLIP_ID", help="sha256, or a unique prefix (>= 8)")
    parser.add_argument("--out", metavar="DIR", default="", help="directory to write the copy to")
    parser.add_argument("--operator", default="", help="who extracts the copy")
    parser.add_argument("--approval", default="", help="reference of the approval to view/copy")
    parser.add_argument("--reason", default="", help="why the copy is made")


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
