"""The receiver's check of a custody chunk before it answers `fin` (SPEC 8.1); pure.

A chunk is accepted when its signature verifies with the dock's key, every line is the
canonical JSON of an entry whose hash is right, the entries link to each other and to the
chunk's `prev_hash`/`head_hash`, and it continues what central holds of that dock's chain:
from seq 1 (`prev` 64 zeros, the chain's id in the first entry) or up to the seq after the
last one held, entries already held byte-identical. What a chunk says differently from
what central holds is a fork.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.chain.chunk import KIND
from agent.evidence.custody import ZERO_HASH, canonical, chain_id_of, entry_hash
from agent.trust import signatures

CHAIN_ID_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
MAX_SEQ = 10**12

FORK = "custody_fork"  # differs from what central holds: kept aside, one log line
INVALID = "custody_invalid"  # signed, but its entries do not hash or link: kept aside too
GAP = "custody_gap"  # starts after the seq central needs next: the dock sends from earlier
UNSIGNED = "not_authorized"  # no valid signature of this dock: nothing of it is kept


class ChunkRefused(Exception):
    """Why a chunk is refused; `keep` when it is signed and so kept aside for people."""

    def __init__(self, reason: str, detail: str, seq: int | None = None, keep: bool = True):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.seq, self.keep = reason, detail, seq, keep


@dataclass(frozen=True)
class Meta:
    """A custody chunk's user_data, checked for shape."""

    dock_id: str
    chain_id: str
    first_seq: int
    last_seq: int
    prev_hash: str
    head_hash: str
    chain_sig: str

    def message(self) -> str:
        """What `chain_sig` signs."""
        return signatures.custody_message(
            self.dock_id, self.chain_id, self.last_seq, self.head_hash
        )


@dataclass(frozen=True)
class Held:
    """The last entry central holds of one chain; (0, 64 zeros) when it holds none."""

    last_seq: int = 0
    last_hash: str = ZERO_HASH


def is_custody(user_data: object) -> bool:
    """Whether a transfer's user_data says it is a custody chunk."""
    return isinstance(user_data, Mapping) and user_data.get("kind") == KIND


def _seq(value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_SEQ:
        raise ChunkRefused(INVALID, f"seq {value!r} is not a positive integer", keep=False)
    return value


def _text(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ChunkRefused(INVALID, f"{what} {str(value)[:80]!r} is malformed", keep=False)
    return value


def parse_meta(user_data: Mapping[str, Any]) -> Meta:
    """The chunk's Meta; ChunkRefused (kept nowhere) when a field is missing or malformed."""
    meta = Meta(
        _text(user_data.get("dock_id"), CHAIN_ID_RE, "dock_id"),
        _text(user_data.get("chain_id"), CHAIN_ID_RE, "chain_id"),
        _seq(user_data.get("first_seq")),
        _seq(user_data.get("last_seq")),
        _text(user_data.get("prev_hash"), HEX64_RE, "prev_hash"),
        _text(user_data.get("head_hash"), HEX64_RE, "head_hash"),
        _text(user_data.get("chain_sig"), re.compile(r"[0-9a-f]{128}"), "chain_sig"),
    )
    if meta.last_seq < meta.first_seq:
        raise ChunkRefused(INVALID, "last_seq before first_seq", keep=False)
    return meta


def check_signature(meta: Meta, pub: Ed25519PublicKey) -> None:
    """ChunkRefused (kept nowhere) unless `chain_sig` verifies with the dock's key."""
    if not signatures.verify(pub, meta.message(), meta.chain_sig):
        raise ChunkRefused(UNSIGNED, "chain_sig does not verify with the dock's key", keep=False)


def parse_lines(meta: Meta, data: bytes) -> list[bytes]:
    """The chunk's lines (without newlines), each a canonical, correctly hashed, linked entry."""
    if not data.endswith(b"\n"):
        raise ChunkRefused(INVALID, "the last line has no newline")
    lines = data[:-1].split(b"\n")
    if len(lines) != meta.last_seq - meta.first_seq + 1:
        raise ChunkRefused(INVALID, f"{len(lines)} lines for seqs {meta.first_seq}-{meta.last_seq}")
    prev = meta.prev_hash
    for seq, line in enumerate(lines, start=meta.first_seq):
        prev = _check_line(meta, seq, line, prev)
    if prev != meta.head_hash:
        raise ChunkRefused(INVALID, "head_hash is not the last entry's hash", meta.last_seq)
    return lines


def _check_line(meta: Meta, seq: int, line: bytes, prev: str) -> str:
    """The line's hash, after checking it is entry `seq` linked to `prev`."""
    try:
        entry = json.loads(line)
        ok = isinstance(entry, dict) and canonical(entry).encode("utf-8") == line
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise ChunkRefused(INVALID, f"seq {seq}: not a canonical custody entry", seq)
    if entry.get("seq") != seq or entry.get("prev") != prev:
        raise ChunkRefused(INVALID, f"seq {seq}: out of order or not linked to the one before", seq)
    if entry.get("hash") != entry_hash(entry):
        raise ChunkRefused(INVALID, f"seq {seq}: hash does not match the entry (altered)", seq)
    if seq == 1 and (prev != ZERO_HASH or chain_id_of(entry) != meta.chain_id):
        raise ChunkRefused(INVALID, "seq 1: not the first entry of this chain", 1)
    return str(entry["hash"])


def continues(
    meta: Meta, lines: list[bytes], held: Held, held_lines: Callable[[int, int], Iterable[bytes]]
) -> list[bytes]:
    """The lines after what central holds; ChunkRefused on a gap or a fork."""
    if meta.first_seq > held.last_seq + 1:
        raise ChunkRefused(
            GAP, f"starts at seq {meta.first_seq}; central holds up to {held.last_seq}", keep=False
        )
    if meta.first_seq == held.last_seq + 1:
        if meta.prev_hash != held.last_hash:
            raise ChunkRefused(
                FORK,
                f"seq {meta.first_seq} does not link to held seq {held.last_seq}",
                meta.first_seq,
            )
        return lines
    upto = min(meta.last_seq, held.last_seq)
    seq = meta.first_seq
    for mine, theirs in zip(held_lines(meta.first_seq, upto), lines, strict=False):
        if mine != theirs:
            raise ChunkRefused(FORK, f"seq {seq} differs from the entry central holds", seq)
        seq += 1
    if seq != upto + 1:
        raise ChunkRefused(FORK, f"central cannot read its own seq {seq} to compare", seq)
    return lines[upto + 1 - meta.first_seq :]


def check_chunk(
    meta: Meta,
    data: bytes,
    pub: Ed25519PublicKey | None,
    held: Held,
    held_lines: Callable[[int, int], Iterable[bytes]],
) -> list[bytes]:
    """The new lines (seq after `held`) of a chunk that passes every check; else ChunkRefused.

    `pub` None: a receiver without dock keys (SPEC 11 off): everything but the signature is
    checked, and `receive verify` says the signatures were not.
    """
    if pub is not None:
        check_signature(meta, pub)
    return continues(meta, parse_lines(meta, data), held, held_lines)
