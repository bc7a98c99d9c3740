"""`dock-agent verify`: re-hash the store against the index and check the custody chain."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config
from agent.evidence import moment
from agent.evidence.custody import iter_entries, verify_chain
from agent.evidence.custody_check import cross_check
from agent.evidence.index.snapshot import IndexSnapshot
from agent.evidence.lifecycle import has_local_copy
from agent.evidence.moment import Moment
from agent.evidence.store import sha256_file
from agent.notes.check import notes_cross_check
from agent.notes.store import NotesCorrupt

CONFIRM_AFTER_S = 0.5  # a write in flight (a row changed just after its entry) lands by then


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


def check_store(index: IndexSnapshot) -> tuple[int, dict[str, str]]:
    """(clips checked, problem by clip id): every local copy must exist and hash as indexed."""
    problems: dict[str, str] = {}
    checked = 0
    for record in index.iter_all():
        if not has_local_copy(record):
            continue
        checked += 1
        problem = check_clip(record)
        if problem:
            problems[str(record["clip_id"])] = problem
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


def recheck_store(problems: dict[str, str], index: IndexSnapshot) -> list[str]:
    """The store problems that still hold against a later index (a purge lands after its file
    is gone: the row may say `purged` only a moment later)."""
    if not problems:
        return []
    later = {str(r["clip_id"]): r for r in index.iter_all() if str(r["clip_id"]) in problems}
    kept = []
    for clip_id, problem in problems.items():
        record = later.get(clip_id)
        if record is not None and has_local_copy(record) and check_clip(record):
            kept.append(problem)
    return kept


def check_custody(moment: Moment) -> list[str]:
    """Custody against the index and notes.json, judged at one moment (see agent.evidence.moment)."""
    before = moment.before.seq
    problems = [
        f"custody vs index: {p}"
        for p in cross_check(_entries(moment), moment.index.iter_all(), before)
    ]
    if isinstance(moment.notes, NotesCorrupt):
        return [*problems, f"notes vs custody: {moment.notes}"]
    notes = notes_cross_check(_entries(moment), moment.notes, before)
    return problems + [f"notes vs custody: {p}" for p in notes]


def _entries(moment: Moment) -> Iterator[dict[str, Any]]:
    """The custody entries up to the moment's `after` (none when there is no log yet)."""
    if moment.after.size:
        yield from iter_entries(moment.log, moment.after.size)


def confirmed(problems: list[str], data_dir: Path) -> tuple[list[str], Moment | None]:
    """The problems that hold at a later moment too (a write in flight settles; a real
    mismatch stays), with that moment; none taken when there is nothing to confirm."""
    if not problems:
        return [], None
    time.sleep(CONFIRM_AFTER_S)
    later = moment.take(data_dir)
    again = set(check_custody(later))
    return [p for p in problems if p in again], later


def run(args: argparse.Namespace) -> int:
    """Exit 0 when store and chain are intact, 1 naming each mismatch."""
    cfg = load_config(args.config)
    now = moment.take(cfg.data_dir)
    checked, store = check_store(now.index)
    chain = verify_chain(now.log, now.after.size) if now.after.size else []
    custody, later = confirmed(check_custody(now), cfg.data_dir)
    if store:
        later = later or moment.take(cfg.data_dir)
        stored = recheck_store(store, later.index)
    else:
        stored = []
    problems = stored + [f"custody log: {p}" for p in chain] + custody
    for problem in problems:
        print(f"MISMATCH {problem}")
    verdict = "FAILED" if problems else "OK"
    print(
        f"verify {verdict}: {checked} stored clips re-hashed, custody chain "
        f"{'broken' if chain else 'intact'} up to seq {now.after.seq}, {len(problems)} problems"
    )
    return 1 if problems else 0
