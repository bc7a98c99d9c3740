"""A benchmark times only work that was done: every clip stored and verified, no bay in fault.

A broken offload (a bay in `fault`, a clip missing from the index, a copy never verified) is
fast; timed as a finished one it would make a failure look like a good row. So a row whose
clips are not all stored and verified raises NotStored, naming what is missing, and the
table shows the benchmark's error instead of a ratio (tests/bench/__main__.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from agent.evidence.custody import iter_entries
from agent.evidence.index import ClipIndex

FINISHED_STATES = ("charging", "ready")  # a bay leaves offloading for these once all is verified
SHOWN = 5  # problems named in the message; the rest are counted


class NotStored(RuntimeError):
    """A timed run that did not store and verify every clip: no result."""


def bay_finished(bay: object, state: object) -> bool:
    """True once a bay is in a finished state; NotStored when it ended in `fault`."""
    if state == "fault":
        raise NotStored(f"bay {bay} ended in fault: a failed offload is not timed")
    return state in FINISHED_STATES


def sha256_file(path: Path) -> str:
    """The SHA-256 hex of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sources(paths: Iterable[Path]) -> dict[str, int]:
    """SHA-256 -> size of the recorder files a run must store (hashed before it is timed)."""
    return {sha256_file(p): p.stat().st_size for p in paths}


def check_stored(data_dir: Path, expected: dict[str, int]) -> None:
    """Raise NotStored unless every expected clip is indexed, held locally and verified."""
    index = ClipIndex(data_dir)
    try:
        records = {r.get("sha256"): r for r in index.iter_all()}
    finally:
        index.close()
    verified = {
        e.get("sha256")
        for e in iter_entries(data_dir / "custody.jsonl")
        if e.get("event") == "clip_verified"
    }
    problems = [
        f"{sha[:12]}: {why}"
        for sha, size in expected.items()
        if (why := _problem(records.get(sha), size, sha in verified))
    ]
    if problems:
        more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise NotStored(
            f"{len(problems)} of {len(expected)} clips not stored and verified: "
            f"{'; '.join(problems[:SHOWN])}{more}"
        )


def _problem(record: dict[str, object] | None, size: int, verified: bool) -> str:
    if record is None:
        return "not in the index"
    local = record.get("local_path")
    if not isinstance(local, str) or not Path(local).is_file():
        return "no local copy"
    if Path(local).stat().st_size != size or record.get("size") != size:
        return f"stored size {Path(local).stat().st_size}, expected {size}"
    return "" if verified else "no clip_verified custody entry"
