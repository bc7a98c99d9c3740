"""A custody chunk (SPEC 8.1): a run of the dock's custody log, its lines byte for byte.

The dock sends its log upstream as file transfers named
`custody-{first_seq:09d}-{last_seq:09d}.jsonl`, `file_id` = the SHA-256 of the bytes, with a
compact `user_data` (`kind: "custody"`, dock and chain ids, the seq range, the `prev` of the
first entry, the hash of the last, and `chain_sig` over the last two with the dock's key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.evidence.custody import chain_id_of
from agent.trust import signatures

KIND = "custody"
MAX_CHUNK_BYTES = 1 << 20  # about 2,500 entries: one transfer of a few segments
USER_DATA_MAX = 1024  # SPEC 7.1: user_data fits one S3 metadata header


@dataclass(frozen=True)
class Chunk:
    """One chunk ready to send: its bytes, name, user_data, and where it ends in the log."""

    data: bytes
    user_data: dict[str, Any]
    first_seq: int
    last_seq: int
    end_offset: int  # byte offset in the log just after the chunk's last line

    @property
    def name(self) -> str:
        """`custody-{first_seq:09d}-{last_seq:09d}.jsonl`."""
        return chunk_name(self.first_seq, self.last_seq)

    @property
    def file_id(self) -> str:
        """The SHA-256 hex of the chunk's bytes (sending it twice is idempotent)."""
        return hashlib.sha256(self.data).hexdigest()


def chunk_name(first_seq: int, last_seq: int) -> str:
    """The transfer's file name of a chunk."""
    return f"custody-{first_seq:09d}-{last_seq:09d}.jsonl"


def read_chain_id(log: Path) -> str | None:
    """The chain id of a custody log (from its first entry), or None while it is empty."""
    try:
        with open(log, "rb") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return None
    if not first.endswith(b"\n"):
        return None
    return chain_id_of(json.loads(first))


def build_chunk(
    log: Path,
    dock_id: str,
    key: Ed25519PrivateKey,
    first_seq: int,
    start: int = 0,
    limit: int | None = None,
    max_bytes: int = MAX_CHUNK_BYTES,
) -> Chunk | None:
    """The chunk of `log` from `first_seq` (at most `max_bytes`, never past byte `limit`).

    `start` is the byte offset of a line at or before `first_seq` (a previous chunk's
    `end_offset`), so a long log is not read from its beginning each time. None when the
    log holds nothing from `first_seq` on.
    """
    chain_id = read_chain_id(log)
    if chain_id is None:
        return None
    lines, entries, end = _lines_from(log, first_seq, start, limit, max_bytes)
    if not lines:
        return None
    first, last = entries[0], entries[-1]
    meta = {
        "kind": KIND,
        "dock_id": dock_id,
        "chain_id": chain_id,
        "first_seq": first["seq"],
        "last_seq": last["seq"],
        "prev_hash": first["prev"],
        "head_hash": last["hash"],
    }
    message = signatures.custody_message(dock_id, chain_id, last["seq"], last["hash"])
    meta["chain_sig"] = signatures.sign(key, message)
    return Chunk(b"".join(lines), meta, first["seq"], last["seq"], end)


def _lines_from(
    log: Path, first_seq: int, start: int, limit: int | None, max_bytes: int
) -> tuple[list[bytes], list[dict[str, Any]], int]:
    """(lines, their entries, end offset) of complete lines from `first_seq`, within bounds."""
    lines: list[bytes] = []
    entries: list[dict[str, Any]] = []
    size = 0
    with open(log, "rb") as fh:
        start = _line_start(fh, start, first_seq)
        fh.seek(start)
        offset = start
        for raw in fh:
            if not raw.endswith(b"\n") or (limit is not None and offset + len(raw) > limit):
                break
            if lines and size + len(raw) > max_bytes:
                break
            entry = json.loads(raw)
            offset += len(raw)
            if entry["seq"] < first_seq:
                continue
            lines.append(raw)
            entries.append(entry)
            size += len(raw)
    return lines, entries, offset if lines else start


def _line_start(fh: BinaryIO, start: int, first_seq: int) -> int:
    """`start` when a line at or before `first_seq` begins there, else 0 (the log was rewritten
    under the remembered offset: read it from the beginning)."""
    if start <= 0:
        return 0
    fh.seek(start - 1)
    if fh.read(1) != b"\n":
        return 0
    line = fh.readline()
    if not line.endswith(b"\n"):
        return start  # nothing complete after it yet
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return 0
    return start if isinstance(seq, int) and seq <= first_seq else 0
