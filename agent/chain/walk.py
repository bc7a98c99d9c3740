"""One held chain read run by run, line by line, in bounded memory (for `receive verify`).

Each entry is checked without building it again: its line is canonical JSON, so the bytes
of the entry without its hash are the line without `,"hash":"…"` (keys are sorted and
`event` always sorts before `hash`), and their SHA-256 must be the hash. A line that is not
canonical cannot pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.chain.check import ChunkRefused, check_signature, parse_meta
from agent.evidence.custody import ZERO_HASH, chain_id_of

Problem = Callable[[int | None, str], None]


@dataclass
class Walked:
    """What a walk found of one chain."""

    last_seq: int = 0
    last_hash: str = ZERO_HASH
    runs: int = 0
    first_ts: str = ""


def line_hash_ok(line: bytes, entry: dict[str, Any]) -> bool:
    """Whether SHA-256 of the line without its hash field is the entry's hash."""
    value = entry.get("hash")
    if not isinstance(value, str):
        return False
    needle = b',"hash":"' + value.encode("ascii", "replace") + b'"'
    at = line.find(needle)
    if at < 0:
        return False
    body = line[:at] + line[at + len(needle) :]
    return hashlib.sha256(body).hexdigest() == value


def run_starts(cdir: Path) -> list[int]:
    """The first seq of every run of a chain directory, in order."""
    return sorted(int(p.stem) for p in cdir.glob("*.jsonl") if p.stem.isdigit())


def walk(
    cdir: Path, pub: Ed25519PublicKey | None, problem: Problem
) -> Generator[dict[str, Any], None, Walked]:
    """Every entry of a held chain in order, each checked; breaks reported through `problem`.

    The walk's summary is the generator's return value (a Walked).
    """
    chain_id = cdir.name
    done = Walked()
    for start in run_starts(cdir):
        if start != done.last_seq + 1:
            problem(done.last_seq + 1, f"seqs {done.last_seq + 1}-{start - 1} are not at central")
        done.runs += 1
        last = yield from _run(cdir, chain_id, start, done, problem)
        _check_sidecar(cdir, start, last, pub, problem)
    return done


def _run(
    cdir: Path, chain_id: str, start: int, done: Walked, problem: Problem
) -> Generator[dict[str, Any], None, dict[str, Any] | None]:
    """The entries of one run; returns its last entry (or None)."""
    last: dict[str, Any] | None = None
    with open(cdir / f"{start:09d}.jsonl", "rb") as fh:
        for seq, raw in enumerate(fh, start=start):
            entry = _entry(raw, seq, chain_id, done, problem)
            if entry is None:
                continue
            done.last_seq, done.last_hash = seq, str(entry["hash"])
            last = entry
            yield entry
    return last


def _entry(
    raw: bytes, seq: int, chain_id: str, done: Walked, problem: Problem
) -> dict[str, Any] | None:
    line = raw.rstrip(b"\n")
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or entry.get("seq") != seq:
        problem(seq, "not the custody entry of this seq (altered or out of place)")
        done.last_seq, done.last_hash = seq, ""
        return None
    if not line_hash_ok(line, entry):
        problem(seq, "hash does not match the entry (altered at central)")
    if entry.get("prev") != done.last_hash and done.last_hash:
        problem(seq, "prev does not link to the entry before it")
    if seq == 1:
        done.first_ts = str(entry.get("ts", ""))
        if chain_id_of(entry) != chain_id:
            problem(1, "the first entry is not of this chain")
    return entry


def _check_sidecar(
    cdir: Path,
    start: int,
    last: dict[str, Any] | None,
    pub: Ed25519PublicKey | None,
    problem: Problem,
) -> None:
    """The run's chunk user_data: signed by the dock, naming the run's last entry."""
    try:
        meta = parse_meta(json.loads((cdir / f"{start:09d}.json").read_bytes()))
    except (OSError, ValueError, ChunkRefused) as exc:
        problem(start, f"the run's signed chunk data is missing or unreadable ({exc})")
        return
    if last is None or (meta.last_seq, meta.head_hash) != (last.get("seq"), last.get("hash")):
        problem(start, f"the signed head (seq {meta.last_seq}) is not the run's last entry")
    if pub is None:
        return
    try:
        check_signature(meta, pub)
    except ChunkRefused:
        problem(meta.last_seq, "chain_sig does not verify with the dock's key")
