"""What a clip is sent as (SPEC 7.1): a compact `user_data`, and its full manifest as its own file.

The manifest is fixed at the clip's first attempt and kept on disk until both transfers are
acked, so every retry sends the same init payloads (EMQX refuses a differing re-init). Notes
explained later go on R/notes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import durable
from agent.transfer import emqx
from agent.trust.signatures import SIGNATURE_HEX

MAX_USER_DATA_BYTES = 1024  # EMQX's S3 exporter puts user_data in one 2 KB metadata header
SIG_ROOM_BYTES = len(',"dock_sig":""') + SIGNATURE_HEX  # added by the sender (SPEC 11)
COMPACT_KEYS = (
    "dock_id",
    "device_id",
    "officer_id",
    "sha256",
    "size",
    "recorded_start",
    "custody_seq",
    "custody_hash",
)
DONE_DIR = "done"
_CUT_KEYS = ("officer_id", "device_id", "dock_id", "recorded_start")  # free text from outside


def encoded_size(data: dict[str, Any]) -> int:
    """Bytes of `data` as EMQX's S3 exporter writes it (JSON, non-ASCII \\u-escaped)."""
    return len(json.dumps(data, separators=(",", ":")).encode("ascii"))


def compact_user_data(manifest: dict[str, Any], manifest_sha256: str) -> dict[str, Any]:
    """The clip's `user_data`: the compact core, at most 1,024 bytes with `dock_sig` added."""
    core: dict[str, Any] = {k: manifest.get(k) for k in COMPACT_KEYS}
    core["manifest_sha256"] = manifest_sha256
    budget = MAX_USER_DATA_BYTES - SIG_ROOM_BYTES
    for key in _CUT_KEYS:  # ids come from recorder file names: cut, never grow past the limit
        over = encoded_size(core) - budget
        value = core.get(key)
        if over > 0 and isinstance(value, str):
            core[key] = value[: max(0, len(value) - over)]
    for key in _CUT_KEYS:
        if encoded_size(core) > budget:
            core[key] = None
    return core


def manifest_user_data(dock_id: str, clip_sha256: str) -> dict[str, Any]:
    """`user_data` of a manifest transfer: which clip it describes."""
    return {"dock_id": dock_id, "kind": "manifest", "clip_sha256": clip_sha256}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest file's content: UTF-8 JSON, keys sorted (the same manifest, the same bytes)."""
    return json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")


@dataclass(frozen=True)
class Parcel:
    """One clip's two transfers: the clip (with `user_data`) and its manifest file."""

    user_data: dict[str, Any]
    manifest_path: Path
    manifest_sha256: str
    manifest_size: int
    clip_acked: bool


class Parcels:
    """The persisted manifests of clips being sent, in `directory`.

    A sent clip's manifest moves to `done/` and stays as long as the sender keeps the clip's
    init (`keep_s`, the init's expire_after_s): sending the clip again (resync, or a crash
    before its ack was recorded) repeats the same init, whose `manifest_sha256` names it.
    """

    def __init__(self, directory: Path, keep_s: float = 30 * 86400) -> None:
        self.dir = directory
        self.keep_s = keep_s
        self._pruned_at = 0.0

    def prepare(self, clip_id: str, build: Any) -> Parcel:
        """The clip's parcel: the saved manifest (also of an earlier send), else `build()` saved."""
        path = self.dir / f"{clip_id}.manifest.json"
        sent = self.dir / DONE_DIR / path.name
        if not path.exists() and sent.exists():
            os.replace(sent, path)
            durable.fsync_dir(self.dir)
        if not path.exists():
            durable.make_dirs(self.dir)
            durable.write_bytes(path, manifest_bytes(build()))
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        return Parcel(
            user_data=compact_user_data(json.loads(data), digest),
            manifest_path=path,
            manifest_sha256=digest,
            manifest_size=len(data),
            clip_acked=self._marker(clip_id).exists(),
        )

    def clip_acked(self, clip_id: str) -> None:
        """Remember that the clip itself was acked (its manifest is still to go)."""
        durable.write_bytes(self._marker(clip_id), b"")

    def done(self, clip_id: str) -> None:
        """Both transfers are acked: the manifest moves to `done/`; old ones there are removed."""
        self._marker(clip_id).unlink(missing_ok=True)
        path = self.dir / f"{clip_id}.manifest.json"
        if path.exists():
            durable.make_dirs(self.dir / DONE_DIR)
            os.replace(path, self.dir / DONE_DIR / path.name)
            durable.fsync_dir(self.dir)
        if time.time() - self._pruned_at >= 3600:
            self._pruned_at = time.time()
            self.prune()

    def prune(self, now: float | None = None) -> int:
        """Remove sent manifests first written more than `keep_s` ago; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        for path in (self.dir / DONE_DIR).glob("*.manifest.json"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > self.keep_s:
                    path.unlink()
                    removed += 1
        return removed

    def _marker(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.clip-acked"


def manifest_name(file_name: str) -> str:
    """Name of the clip's manifest transfer."""
    return emqx.manifest_name(file_name)
