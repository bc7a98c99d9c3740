"""Custody logs, keys and chunks for the chain tests (SPEC 8.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.evidence.custody import CustodyLog, canonical, entry_hash


def fill(path: Path, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Append `n` clip_offloaded entries (each a distinct clip) to a real custody log."""
    log = CustodyLog(path)
    try:
        return [
            log.append("clip_offloaded", device_id="ZFY1", file=f"c{i}.MP4", sha256=f"{i:064x}")
            for i in range(start, start + n)
        ]
    finally:
        log.close()


def rewrite(path: Path, seq: int, **changes: Any) -> None:
    """Edit entry `seq` and re-hash every entry from it on, as root on the dock could."""
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    prev = entries[seq - 2]["hash"] if seq > 1 else "0" * 64
    for entry in entries[seq - 1 :]:
        if entry["seq"] == seq:
            entry.update(changes)
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
    path.write_bytes(b"".join(canonical(e).encode() + b"\n" for e in entries))


def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
