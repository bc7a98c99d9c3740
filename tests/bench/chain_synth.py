"""Synthetic custody chains at central, as `receive verify` finds them after a busy year.

`populate(store, keys_dir, docks, entries, at_central)` writes, per dock: a key pair (the
`.pub` in `keys_dir`), one chain of `entries` custody entries stored as the receiver stores
them (runs of `RUN` entries with their signed chunk data, head.json), and the clips central
holds (a small file and its manifest.json, the compact user_data) for the first
`at_central` clips, which the chain also syncs and deletes from their recorder. The other
clips are offloaded and verified only: `receive verify` lists them as pending.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.holding import CUSTODY_DIR, HEAD
from agent.evidence.custody import ZERO_HASH, canonical, new_chain_id, seal
from agent.trust import keys, signatures

RUN = 2500  # entries per stored run (one chunk of about 1 MiB)
TS = "2026-11-21T18:02:11.000000+00:00"


def clip_sha(dock: str, n: int) -> str:
    return hashlib.sha256(clip_bytes(dock, n)).hexdigest()


def clip_bytes(dock: str, n: int) -> bytes:
    return f"{dock} clip {n}\n".encode()


def events(dock: str, entries: int, at_central: int) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(event, fields, clip number or -1) in the order a dock logs them, `entries` in all."""
    n = 0
    written = 0
    while True:
        for event, fields in _clip_events(dock, n, n < at_central):
            yield event, fields, n if event == "clip_offloaded" else -1
            written += 1
            if written == entries:
                return
        n += 1


def _clip_events(dock: str, n: int, central: bool) -> list[tuple[str, dict[str, Any]]]:
    sha = clip_sha(dock, n)
    base = {"device_id": f"ZFY{n // 40:07d}", "sha256": sha}
    file = f"ZFY{n // 40:07d}_012345_20261121180211_{n % 40:04d}.MP4"
    out: list[tuple[str, dict[str, Any]]] = []
    if n % 40 == 0:
        out.append(("docked", {"device_id": base["device_id"], "bay": 1}))
    out.append(
        (
            "clip_offloaded",
            {
                **base,
                "file": file,
                "size": 1 << 20,
                "local_path": f"/var/lib/dock-agent/store/{file}",
            },
        )
    )
    out.append(("clip_verified", base))
    if n % 50 == 7:
        note = f"N-{sha[:12]}"
        out.append(
            (
                "note_created",
                {"note_id": note, "type": "gap", "device_id": base["device_id"], "clips": [sha]},
            )
        )
        out.append(("note_explained", {"note_id": note, "author": "王警官", "text": "换电池"}))
    if central:
        out.append(("clip_synced", {**base, "client_id": dock}))
        out.append(("recorder_clip_deleting", {**base, "file": file}))
        out.append(("recorder_clip_deleted", {**base, "file": file}))
    return out


def populate_dock(store: Path, keys_dir: Path, dock: str, entries: int, at_central: int) -> None:
    """One dock's chain and clips at central (see the module docstring)."""
    key = Ed25519PrivateKey.generate()
    keys.write_public(keys_dir / f"{dock}.pub", key.public_key(), dock)
    chain = new_chain_id()
    cdir = store / dock / CUSTODY_DIR / chain
    cdir.mkdir(parents=True)
    prev, run, first = ZERO_HASH, [], 1
    for seq, (event, fields, clip) in enumerate(events(dock, entries, at_central), start=1):
        entry = seal(seq, TS, event, prev, fields, chain if seq == 1 else "")
        prev = entry["hash"]
        run.append(canonical(entry).encode() + b"\n")
        if 0 <= clip < at_central:
            _clip_at_central(store / dock, dock, clip, entry)
        if len(run) == RUN or seq == entries:
            _write_run(cdir, key, dock, chain, first, run, entry)
            first, run = seq + 1, []


def _clip_at_central(ddir: Path, dock: str, n: int, entry: dict[str, Any]) -> None:
    sha = entry["sha256"]
    fdir = ddir / sha
    fdir.mkdir()
    (fdir / entry["file"]).write_bytes(clip_bytes(dock, n))
    user_data = {
        "dock_id": dock,
        "sha256": sha,
        "size": 1 << 20,
        "custody_seq": entry["seq"],
        "custody_hash": entry["hash"],
    }
    (fdir / "manifest.json").write_text(json.dumps(user_data))


def _write_run(
    cdir: Path,
    key: Ed25519PrivateKey,
    dock: str,
    chain: str,
    first: int,
    run: list[bytes],
    last: dict[str, Any],
) -> None:
    stem = f"{first:09d}"
    (cdir / f"{stem}.jsonl").write_bytes(b"".join(run))
    prev = json.loads(run[0])["prev"]
    sig = signatures.sign(key, signatures.custody_message(dock, chain, last["seq"], last["hash"]))
    meta = {
        "kind": "custody",
        "dock_id": dock,
        "chain_id": chain,
        "first_seq": first,
        "last_seq": last["seq"],
        "prev_hash": prev,
        "head_hash": last["hash"],
        "chain_sig": sig,
        "stored_first_seq": first,
        "received_at": TS,
    }
    (cdir / f"{stem}.json").write_text(json.dumps(meta))
    (cdir / HEAD).write_text(json.dumps({"last_seq": last["seq"], "last_hash": last["hash"]}))


def populate(store: Path, keys_dir: Path, docks: int, entries: int, at_central: int) -> list[str]:
    """`docks` docks named dock-000.. under `store`; their names."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    names = [f"dock-{d:03d}" for d in range(docks)]
    for name in names:
        populate_dock(store, keys_dir, name, entries, at_central)
    os.sync()
    return names
