"""`dock-agent receive verify`: central's check of every dock's chain and clips (SPEC 8.1)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.chain.audit import AuditLine, DockAudit, DockReport, dock_dirs
from agent.schema import ConfigError
from agent.transfer.receiver.config import ReceiverConfig, load_receiver_config
from agent.trust import keys

DOCK_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
LABEL = {"mismatch": "MISMATCH", "pending": "pending", "acknowledge": "ACKNOWLEDGE"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`receive verify`'s own options."""
    parser.add_argument("--dock", metavar="ID", help="receive verify: only this dock (client id)")
    parser.add_argument("--json", action="store_true", help="receive verify: a JSON array")


def dock_key(cfg: ReceiverConfig, dock: str) -> Ed25519PublicKey | None:
    """The dock's public key from dock_keys_dir, or None when there is none to read."""
    if not cfg.receiver.dock_keys_dir:
        return None
    try:
        return keys.load_public(Path(cfg.receiver.dock_keys_dir) / f"{dock}.pub")
    except (OSError, keys.KeyFileError):
        return None


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every dock's chain and clips agree, 1 naming each problem, 2 on bad config."""
    try:
        cfg = load_receiver_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dock-agent: config: {problem}", file=sys.stderr)
        return 2
    if args.dock is not None and not DOCK_RE.fullmatch(args.dock):
        print(
            f"dock-agent: receive verify: --dock {args.dock!r}: expected a client id",
            file=sys.stderr,
        )
        return 2
    docks = dock_dirs(cfg.store_dir, args.dock)
    if args.dock and not docks[0].is_dir():
        print(
            f"dock-agent: receive verify: no dock {args.dock!r} in {cfg.store_dir}", file=sys.stderr
        )
        return 1
    audits = (DockAudit(ddir, dock_key(cfg, ddir.name)) for ddir in docks)
    reports = _print_json(audits) if args.json else _print_text(audits)
    return 1 if any(r.problems for r in reports) else 0


def _print_text(audits: Iterable[DockAudit]) -> list[DockReport]:
    """Findings as they come, a line per dock, a verdict; the reports."""
    reports = []
    for audit in audits:
        for finding in audit.findings():
            print(f"{LABEL[finding.kind]} {finding.dock}: {finding.text}")
        print(_dock_line(audit.report))
        reports.append(audit.report)
    problems = sum(r.problems for r in reports)
    new = sum(not c.acknowledged for r in reports for c in r.chains)
    print(
        f"receive verify {'FAILED' if problems else 'OK'}: {len(reports)} docks, "
        f"{problems} problems, {new} chains to acknowledge"
    )
    return reports


def _print_json(audits: Iterable[DockAudit]) -> list[DockReport]:
    """A JSON array written one dock at a time; the reports."""
    reports: list[DockReport] = []
    print("[", end="")
    for audit in audits:
        sep = "," if reports else ""
        print(sep + json.dumps(_as_json(audit), ensure_ascii=False), end="", flush=True)
        reports.append(audit.report)
    print("]")
    return reports


def _dock_line(report: DockReport) -> str:
    chains = ", ".join(
        f"{c.chain_id} seqs 1-{c.last_seq} ({c.runs} runs){'' if c.acknowledged else ' NEW'}"
        for c in report.chains
    )
    return (
        f"dock {report.dock}: chains [{chains or 'none'}]; {report.clips} clips at central, "
        f"{report.matched} matched, {report.pending} pending; "
        f"{'OK' if not report.problems else f'{report.problems} problems'}"
    )


def _as_json(audit: DockAudit) -> dict[str, Any]:
    found: dict[str, list[dict[str, Any]]] = {k: [] for k in LABEL}
    for finding in audit.findings():
        found[finding.kind].append(_finding_json(finding))
    r = audit.report
    return {
        "dock": r.dock,
        "chains": [vars(c) for c in r.chains],
        "clips": r.clips,
        "matched": r.matched,
        "problems": found["mismatch"],
        "pending": found["pending"],
        "acknowledge": found["acknowledge"],
    }


def _finding_json(f: AuditLine) -> dict[str, Any]:
    return {"chain": f.chain, "seq": f.seq, "clip": f.clip, "text": f.text}
