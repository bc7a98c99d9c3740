"""The chains central holds of one dock: `{store}/{client_id}/_custody/` (SPEC 8.1).

Each chain is a directory `{chain_id}/` of runs `{first_seq:09d}.jsonl` (the entries central
did not hold yet, byte for byte) each with `{first_seq:09d}.json` (the chunk's user_data, so
its signature can be checked again) and `head.json` (the last seq held, a cache: the run
after it is looked for on every read, so a crash before head.json was written loses nothing).
Refused chunks that were signed go to `forks/` with a `.json` saying why and at which seq.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import durable
from agent.chain.check import ChunkRefused, Held, Meta, check_chunk

logger = logging.getLogger(__name__)

CUSTODY_DIR = "_custody"
FORKS_DIR = "forks"
HEAD = "head.json"
ACKNOWLEDGED = "acknowledged.json"  # a person's acknowledgement of a new chain


def run_name(first_seq: int) -> str:
    """The stem of the run that starts at `first_seq`."""
    return f"{first_seq:09d}"


class ChainHold:
    """Every chain of one dock at central; one chunk checked and stored at a time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)  # {store}/{client_id}/_custody
        self._lock = threading.Lock()

    def accept(self, meta: Meta, data: bytes, pub: Ed25519PublicKey | None) -> int:
        """Check a chunk and store what is new of it; how many entries were new.

        ChunkRefused when it fails a check: a signed chunk is kept under forks/ first
        and its refusal logged once.
        """
        with self._lock:
            held = self.held(meta.chain_id)
            try:
                new = check_chunk(
                    meta, data, pub, held, lambda a, b: self.lines(meta.chain_id, a, b)
                )
            except ChunkRefused as refused:
                if refused.keep:
                    self._keep_aside(meta, data, refused)
                raise
            if new:
                self._store(meta, new)
            return len(new)

    def held(self, chain_id: str) -> Held:
        """The last entry held of a chain, from head.json and any run written after it."""
        cdir = self.root / chain_id
        held = _read_head(cdir)
        while True:
            run = cdir / f"{run_name(held.last_seq + 1)}.jsonl"
            try:
                data = run.read_bytes()
            except FileNotFoundError:
                return held
            last = json.loads(data[data.rstrip(b"\n").rfind(b"\n") + 1 :])
            held = Held(int(last["seq"]), str(last["hash"]))

    def lines(self, chain_id: str, first: int, last: int) -> Iterator[bytes]:
        """Held lines (without newlines) of seqs first..last, in order."""
        cdir = self.root / chain_id
        starts = sorted(int(p.stem) for p in cdir.glob("*.jsonl"))
        begin = max(bisect.bisect_right(starts, first) - 1, 0)
        for start in starts[begin:]:
            if start > last:
                return
            run = (cdir / f"{run_name(start)}.jsonl").read_bytes().split(b"\n")[:-1]
            for seq, line in enumerate(run, start=start):
                if first <= seq <= last:
                    yield line

    def chains(self) -> list[str]:
        """The chain ids held, oldest first (by when their first run was stored)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name != FORKS_DIR]
        return [p.name for p in sorted(found, key=_first_stored)]

    def _store(self, meta: Meta, new: list[bytes]) -> None:
        """The new lines as a run, its chunk's user_data beside it, then head.json."""
        cdir = self.root / meta.chain_id
        durable.make_dirs(cdir)
        first = meta.last_seq - len(new) + 1
        stem = run_name(first)
        sidecar = {**_user_data(meta), "stored_first_seq": first, "received_at": _now()}
        durable.write_json(cdir / f"{stem}.json", sidecar)
        durable.write_bytes(cdir / f"{stem}.jsonl", b"".join(line + b"\n" for line in new))
        durable.fsync_dir(cdir)
        durable.write_json(cdir / HEAD, {"last_seq": meta.last_seq, "last_hash": meta.head_hash})

    def _keep_aside(self, meta: Meta, data: bytes, refused: ChunkRefused) -> None:
        """A refused signed chunk under forks/, with why; one log line (a resend adds nothing)."""
        fdir = self.root / FORKS_DIR
        digest = hashlib.sha256(data).hexdigest()[:16]
        stem = f"{meta.chain_id}-{meta.first_seq:09d}-{meta.last_seq:09d}-{digest}"
        if (fdir / f"{stem}.json").exists():
            return
        durable.make_dirs(fdir)
        durable.write_bytes(fdir / f"{stem}.jsonl", data)
        why = {
            **_user_data(meta),
            "reason": refused.reason,
            "seq": refused.seq,
            "detail": refused.detail,
            "received_at": _now(),
        }
        durable.write_json(fdir / f"{stem}.json", why)
        logger.error(
            "custody chunk of %s chain %s seqs %d-%d refused (%s), kept as %s",
            meta.dock_id,
            meta.chain_id,
            meta.first_seq,
            meta.last_seq,
            refused,
            fdir / stem,
        )


def _read_head(cdir: Path) -> Held:
    try:
        doc = json.loads((cdir / HEAD).read_bytes())
        return Held(int(doc["last_seq"]), str(doc["last_hash"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return Held()


def _first_stored(cdir: Path) -> tuple[str, str]:
    try:
        doc = json.loads((cdir / f"{run_name(1)}.json").read_bytes())
        return str(doc.get("received_at", "")), cdir.name
    except (OSError, ValueError):
        return "~", cdir.name


def _user_data(meta: Meta) -> dict[str, Any]:
    return {
        "kind": "custody",
        "dock_id": meta.dock_id,
        "chain_id": meta.chain_id,
        "first_seq": meta.first_seq,
        "last_seq": meta.last_seq,
        "prev_hash": meta.prev_hash,
        "head_hash": meta.head_hash,
        "chain_sig": meta.chain_sig,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
