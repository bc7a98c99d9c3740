"""Abandoned partial transfers: which ones are stale, and finding them in the receiver's store.

A partial is `{store}/{client_id}/{file_id}/.partial/` of a file not complete; its last activity
is the newest mtime among that directory and its files (every write, commit and init touches
one). Complete files and their manifests are never candidates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.transfer import protocol as p
from agent.transfer.receiver.escape import is_transfer_dir

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
MANIFEST = "manifest.json"
DEFAULT_PARTIAL_TTL_S = 7 * 86400
MIN_PARTIAL_TTL_S = 60


@dataclass(frozen=True)
class PartialEntry:
    """What the expiry decision needs to know about one partial transfer."""

    client_id: str
    file_id: str  # the transfer's directory name (the escaped file id)
    last_activity: float  # epoch seconds: newest mtime among the partial's directory and files
    size: int  # bytes of its files (what removing it frees, sparse holes aside)
    segments_ttl: int | None = None  # as declared by the sender's init, if readable
    open: bool = False  # open in the store: never stale


def effective_ttl(entry: PartialEntry, ttl: float) -> float:
    """The TTL of one partial: the receiver's, shortened by the init's `segments_ttl`.

    As in EMQX, the sender's `segments_ttl` is clamped to [MIN_PARTIAL_TTL_S, ttl].
    """
    if entry.segments_ttl is None:
        return ttl
    return min(ttl, max(entry.segments_ttl, MIN_PARTIAL_TTL_S))


def stale_partials(entries: Iterable[PartialEntry], now: float, ttl: float) -> list[PartialEntry]:
    """The partials not open whose last activity is more than their TTL before `now`."""
    return [e for e in entries if not e.open and now - e.last_activity > effective_ttl(e, ttl)]


def scan_partials(root: Path, owns: Callable[[str], bool]) -> Iterator[PartialEntry]:
    """Every partial under `root` whose file id `owns` accepts, complete files excluded.

    Directories that are not a valid client id / escaped file id are skipped, as are entries that vanish
    while they are read.
    """
    for client_dir in _subdirs(root):
        if p.path_component_problem(client_dir.name, p.MAX_CLIENT_ID_BYTES):
            continue
        for fdir in _subdirs(client_dir):
            if not is_transfer_dir(fdir.name) or not owns(fdir.name):
                continue
            entry = read_partial(fdir, client_dir.name)
            if entry is not None:
                yield entry


def read_partial(fdir: Path, client_id: str) -> PartialEntry | None:
    """The partial of one file directory, or None when it has none or the file is complete."""
    pdir = fdir / PARTIAL_DIR
    if not pdir.is_dir() or is_complete_dir(fdir):
        return None
    try:
        stats = [pdir.stat()] + [f.stat() for f in pdir.iterdir() if f.is_file()]
    except FileNotFoundError:
        return None
    return PartialEntry(
        client_id=client_id,
        file_id=fdir.name,
        last_activity=max(s.st_mtime for s in stats),
        size=sum(s.st_size for s in stats[1:]),
        segments_ttl=_declared_ttl(pdir / "init.json"),
    )


def is_complete_dir(fdir: Path) -> bool:
    """True when the file and its manifest are in place (a lost file is received again)."""
    if not (fdir / MANIFEST).is_file():
        return False
    return any(
        f.is_file() and f.name != MANIFEST and not f.name.startswith(".") for f in fdir.iterdir()
    )


def _declared_ttl(init_json: Path) -> int | None:
    """The `segments_ttl` recorded with the partial's init, or None."""
    try:
        return p.parse_init(init_json.read_bytes(), checksum_required=False).segments_ttl
    except (OSError, ValueError, p.ProtocolError):
        return None


def _subdirs(path: Path) -> list[Path]:
    """The subdirectories of `path` (none when it is unreadable or gone), hidden ones left out."""
    try:
        with os.scandir(path) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return [path / n for n in sorted(names) if not n.startswith(".")]


def remove_partial(fdir: Path, entry: PartialEntry, now: float) -> bool:
    """Remove a stale partial's state and data (its file directory too when left empty); logged."""
    try:
        shutil.rmtree(fdir / PARTIAL_DIR)
    except OSError as exc:
        logger.warning("could not remove the expired partial %s: %s", fdir, exc)
        return False
    age = now - entry.last_activity
    logger.info(
        "expired partial transfer %s/%s: %s bytes, idle %.0f s (%.1f days)",
        entry.client_id,
        entry.file_id,
        entry.size,
        age,
        age / 86400,
    )
    with contextlib.suppress(OSError):
        fdir.rmdir()  # only when empty
    return True
