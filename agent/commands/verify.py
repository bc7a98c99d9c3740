"""`dock-agent verify`: re-hash the store against the index and check the custody chain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli import add_config_arg
from agent.config import DockConfig, load_config
from agent.evidence.custody import iter_entries, verify_chain
from agent.evidence.custody_check import cross_check
from agent.evidence.index.snapshot import IndexSnapshot
from agent.evidence.lifecycle import has_local_copy
from agent.evidence.store import sha256_file
from agent.notes.check import notes_cross_check
from agent.notes.store import NotesCorrupt, read_notes


def add_parser(subparsers: Any) -> None:
    """Register `verify`."""
    parser = subparsers.add_parser(
        "verify",
        help="re-hash every stored clip and check the custody log",
        description="Re-read every clip the dock still holds and compare its SHA-256 and size\n"
        "with the index; check that the custody log's hash chain is unbroken and agrees with\n"
        "the index and the notes. Prints one MISMATCH line per problem and exits 1 if there is\n"
        "any, 0 when all is intact. Reads only; reading a large store takes a while.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)


def check_store(cfg: DockConfig) -> tuple[int, list[str]]:
    """(clips checked, problems): every local copy must exist and hash as indexed."""
    problems: list[str] = []
    checked = 0
    for record in IndexSnapshot.read(cfg.data_dir).iter_all():
        if not has_local_copy(record):
            continue
        checked += 1
        problem = check_clip(record)
        if problem:
            problems.append(problem)
    return checked, problems


def check_clip(record: dict[str, Any]) -> str | None:
    """A sentence naming what is wrong with one stored clip, or None."""
    path = Path(record.get("local_path") or "")
    name = f"clip {record['clip_id'][:12]} ({record.get('file_name')}, {path})"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{name}: missing from the store ({exc.strerror})"
    if size != record.get("size"):
        return f"{name}: size {size} != indexed {record.get('size')}"
    actual = sha256_file(path)
    if actual != record.get("sha256"):
        return f"{name}: sha256 {actual} != indexed {record.get('sha256')}"
    return None


def check_custody_index(cfg: DockConfig) -> list[str]:
    """Purges, recorder deletions, exports and offload entries: custody log vs index."""
    log = cfg.data_dir / "custody.jsonl"
    index = IndexSnapshot.read(cfg.data_dir)
    return cross_check(iter_entries(log) if log.exists() else [], index.iter_all())


def check_custody_notes(cfg: DockConfig) -> list[str]:
    """Note entries: custody log vs notes.json (a crash between the two, or a lost note)."""
    log = cfg.data_dir / "custody.jsonl"
    try:
        notes = read_notes(cfg.data_dir)
    except NotesCorrupt as exc:
        return [str(exc)]
    return notes_cross_check(iter_entries(log) if log.exists() else [], notes)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when store and chain are intact, 1 naming each mismatch."""
    cfg = load_config(args.config)
    checked, problems = check_store(cfg)
    log = cfg.data_dir / "custody.jsonl"
    chain = verify_chain(log) if log.exists() else []  # no log yet: nothing was ever logged
    problems += [f"custody log: {p}" for p in chain]
    problems += [f"custody vs index: {p}" for p in check_custody_index(cfg)]
    problems += [f"notes vs custody: {p}" for p in check_custody_notes(cfg)]
    for problem in problems:
        print(f"MISMATCH {problem}")
    verdict = "FAILED" if problems else "OK"
    print(
        f"verify {verdict}: {checked} stored clips re-hashed, custody chain "
        f"{'broken' if chain else 'intact'}, {len(problems)} problems"
    )
    return 1 if problems else 0
