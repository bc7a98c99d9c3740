"""One consistent moment of the custody log and the files derived from it (SPEC 9).

`dock-agent verify` runs while the daemon works. The daemon writes in two orders:
the clip index after custody (`clip_offloaded`, purges, recorder deletions are
logged first, then the row changes), and notes.json before custody (a note is saved,
then `note_created` is appended, both under the notes lock). So a moment is read as:

1. `before`: where the custody log ends (its complete lines, under its shared lock);
2. the index;
3. under the notes lock (shared: no note is half created), notes.json and `after`,
   where the custody log ends then.

Judged from it, soundly: what the index or notes.json says happened must be in custody
up to `after` (it was logged before the derived file was written, or under the same
lock); what custody up to `before` says must show in notes.json (saved before it was
logged). What custody says must show in the index can lag by one write (the row changes
just after the entry): `verify` confirms those with a later moment. Entries after
`before` are newer than this check, never mismatches.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from agent.durable import flocked
from agent.evidence.custody import FILE_NAME, Cut, read_cut
from agent.evidence.index.snapshot import IndexSnapshot
from agent.notes.model import Note
from agent.notes.store import NOTES_FILE, NotesCorrupt, read_notes


@dataclass
class Moment:
    """Custody bounds around one read of the index and notes.json."""

    log: Path
    before: Cut
    after: Cut
    index: IndexSnapshot
    notes: list[Note] | NotesCorrupt


def take(data_dir: Path) -> Moment:
    """Read custody's end, the index, then notes.json and custody's end under the notes lock."""
    data_dir = Path(data_dir)
    log = data_dir / FILE_NAME
    before = read_cut(log)
    index = IndexSnapshot.read(data_dir)
    with notes_locked(data_dir):
        try:
            notes: list[Note] | NotesCorrupt = read_notes(data_dir)
        except NotesCorrupt as exc:
            notes = exc
        after = read_cut(log)
    return Moment(log, before, after, index, notes)


@contextmanager
def notes_locked(data_dir: Path) -> Iterator[None]:
    """A shared lock on the notes' lock file, when there is one (never created here)."""
    try:
        fd: int | None = os.open(Path(data_dir) / f".{NOTES_FILE}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = None  # no notes were ever written (or it is not ours to read): nothing to wait for
    try:
        with flocked(fd, fcntl.LOCK_SH) if fd is not None else nullcontext():
            yield
    finally:
        if fd is not None:
            os.close(fd)
