"""`dock-agent notes list|add`: read the timeline notes, append a person's explanation."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, tzinfo
from typing import Any

from agent.config import DockConfig, load_config
from agent.notes.model import Note
from agent.notes.store import NotesCorrupt, NotesStore, read_notes
from agent.schema import ConfigError

COLUMNS = ("NOTE", "TYPE", "DEVICE", "WHEN", "DURATION", "CAUSE", "EXPLAINED")


def add_parser(subparsers: Any) -> None:
    """Add `notes list [--json]` and `notes add NOTE_ID --author A --text T`."""
    parser = subparsers.add_parser(
        "notes",
        help="gaps, interruptions and other notes on recordings, and their explanations",
        description="The dock notes what a supervisor should look at: gaps between clips,\n"
        "interruptions, late offloads, corrected clocks, truncated clips. `notes list` shows\n"
        "them (read-only); `notes add` appends a person's explanation, which is kept with the\n"
        "note and logged in the custody log (nothing is ever rewritten).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_option(parser)
    actions = parser.add_subparsers(dest="notes_action", metavar="{list,add}", required=True)
    listing = actions.add_parser(
        "list", help="list notes as a table, or --json", description="List the notes, oldest first."
    )
    _config_option(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument("--device", metavar="ID", help="only notes of this recorder")
    add = actions.add_parser(
        "add",
        help="append an explanation to a note (never rewrites)",
        description="Append an explanation to note NOTE_ID (see `notes list`); logged in custody.",
    )
    _config_option(add)
    add.add_argument("note_id", metavar="NOTE_ID", help="the note, e.g. N-0d3d25c1302d")
    add.add_argument("--author", required=True, help="who explains (name or officer id)")
    add.add_argument("--text", required=True, help="the explanation, in your words")


def _config_option(parser: argparse.ArgumentParser) -> None:
    """-c CONFIG at any level, without clobbering a value the dispatcher already parsed."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        default=argparse.SUPPRESS,
        help="configuration file (default: $DOCK_AGENT_CONFIG, else "
        "/etc/dock-agent/dock-agent.toml)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `notes list` or `notes add`; 0 ok, 1 failure, 2 bad usage or configuration."""
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        if args.notes_action == "list":
            return _list(cfg, bool(args.json), getattr(args, "device", None))
        return _add(cfg, args.note_id, args.author, args.text)
    except NotesCorrupt as exc:
        print(f"notes: {exc}", file=sys.stderr)
        return 1


def _list(cfg: DockConfig, as_json: bool, device: str | None) -> int:
    """Print the notes as JSON or as a table for a supervisor."""
    notes = sorted(
        (n for n in read_notes(cfg.data_dir) if device in (None, n.device_id)),
        key=lambda n: (n.start, n.note_id),
    )
    if as_json:
        print(json.dumps([n.to_json() for n in notes], ensure_ascii=False, indent=1))
        return 0
    if not notes:
        print("no notes")
        return 0
    zone = _zone(cfg)
    rows = [_row(note, zone) for note in notes]
    print(_table([list(COLUMNS), *rows]))
    unexplained = sum(1 for n in notes if not n.explanations)
    print(f"\n{len(notes)} notes, {unexplained} without explanation; times in {zone}")
    return 0


def _add(cfg: DockConfig, note_id: str, author: str, text: str) -> int:
    """Append one explanation and say so."""
    from agent.evidence.custody import CustodyLog

    custody = CustodyLog(cfg.data_dir / "custody.jsonl")
    try:
        note = NotesStore(cfg.data_dir, custody).explain(note_id, author, text)
    except KeyError:
        print(f"notes: no note {note_id!r} (see `dock-agent notes list`)", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"notes add: {exc}", file=sys.stderr)
        return 2
    finally:
        custody.close()
    count = len(note.explanations)
    print(f"{note.note_id}: explanation by {author} added ({count} in all)")
    return 0


def _zone(cfg: DockConfig) -> tzinfo:
    """The zone people read times in: the configured one, else the dock's."""
    if cfg.policy.timezone:
        from zoneinfo import ZoneInfo

        return ZoneInfo(cfg.policy.timezone)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def _row(note: Note, zone: tzinfo) -> list[str]:
    """One table row."""
    when = datetime.fromisoformat(note.start).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    explained = f"yes ({len(note.explanations)})" if note.explanations else "no"
    cells = [note.note_id, note.type, note.device_id, when, _duration(note.duration_s)]
    return [*cells, note.cause, explained]


def _duration(seconds: float) -> str:
    """1h02m03s / 1m30s / 4.5s."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _table(rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
