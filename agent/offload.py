"""One docking's offload: every clip from the recorder into the store, indexed and logged."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import retention, roster
from agent.findings import Finding, fault, warning
from agent.record import Docking, dest_rel, new_record, start_time
from agent.services import Services
from agent.store import CHUNK, DiskFull, SourceReadError, StoredCopy
from firmware_interface.base import ClipEntry, Recorder, RecorderError, RecorderGone

logger = logging.getLogger(__name__)


@dataclass
class OffloadResult:
    """What an offload pass did: clips stored (new or known) and problems met."""

    clip_ids: list[str] = field(default_factory=list)
    new: int = 0
    known: int = 0
    findings: list[Finding] = field(default_factory=list)
    pending: int = 0  # clips not offloaded (disk full, errors)


class Offloader:
    """Copies a docked recorder's clips into the store (SPEC 1 step 3, SPEC 9)."""

    def __init__(
        self,
        services: Services,
        docking: Docking,
        recorder: Recorder,
        cancel: threading.Event,
        progress: Callable[[int, int], None],
    ) -> None:
        self.s = services
        self.docking = docking
        self.recorder = recorder
        self.cancel = cancel
        self.progress = progress  # (clips_done_delta, bytes_done_delta)
        # Rows indexed before this pass; the pass's own rows have other recorder paths.
        self._prior: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.log_extra = {
            "DOCK_ID": services.cfg.dock.id,
            "BAY": docking.bay,
            "DEVICE_ID": docking.identity.device_id,
        }

    def run(self, clips: list[ClipEntry]) -> OffloadResult:
        """Offload `clips` oldest first; stop at disk full, undock or cancel (RecorderGone raised)."""
        result = OffloadResult()
        self._prior = self._indexed_files()
        for i, clip in enumerate(clips):
            if self.cancel.is_set():
                raise RecorderGone("offload cancelled: recorder undocked")
            if not self.s.store.has_room(clip.size):
                self._disk_full(result, len(clips) - i)
                break
            try:
                self._one(clip, result)
            except DiskFull:
                self._disk_full(result, len(clips) - i)
                break
            except RecorderError as exc:
                if isinstance(exc, RecorderGone):
                    raise
                result.findings.append(warning(exc.code, f"{clip.path}: {exc}", path=clip.path))
                result.pending += 1
            self.progress(1, 0)
        return result

    def _disk_full(self, result: OffloadResult, remaining: int) -> None:
        free = self.s.store.free_bytes()
        msg = f"dock disk full ({free // 2**20} MiB free): offload stopped, nothing deleted"
        result.findings.append(fault("disk_full", msg, free_bytes=free))
        result.pending += remaining
        self.s.bus.alert("disk_full", "critical", msg, bay=self.docking.bay, free_bytes=free)
        logger.error("%s", msg, extra=self.log_extra)

    def _one(self, clip: ClipEntry, result: OffloadResult) -> None:
        known = self._known(clip)
        if known is not None:
            result.clip_ids.append(known["clip_id"])
            result.known += 1
            self.progress(0, clip.size)
            return
        copy = self._copy(clip)
        existing = self.s.index.get(copy.sha256)
        if existing is not None:
            self._drop_duplicate(copy, existing)
            result.clip_ids.append(copy.sha256)
            result.known += 1
            return
        self._record(clip, copy)
        result.clip_ids.append(copy.sha256)
        result.new += 1

    def _copy(self, clip: ClipEntry) -> StoredCopy:
        tag = f"bay{self.docking.bay}"
        provisional = start_time(clip, self.s.store.root / "nonexistent", self.docking)
        try:
            with self.recorder.open_clip(clip) as src:
                return self.s.store.acquire(
                    src,
                    dest_rel(self.docking, provisional.start, clip),
                    tag,
                    lambda n: self.progress(0, n),
                    self.cancel,
                )
        except SourceReadError as exc:
            raise RecorderGone(str(exc)) from exc

    def _indexed_files(self) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """This recorder's active index rows by (recorder path, size), looked up once per pass."""
        rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in self.s.index.find(device_id=self.docking.identity.device_id):
            rows.setdefault((str(row.get("recorder_path")), int(row.get("size") or 0)), []).append(
                row
            )
        return rows

    def _known(self, clip: ClipEntry) -> dict[str, Any] | None:
        """An index row for this very recorder file, confirmed by re-hashing it (no copy)."""
        rows = self._prior.get((clip.path, clip.size))
        if not rows:
            return None
        h = hashlib.sha256()
        try:
            with self.recorder.open_clip(clip) as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise RecorderGone(f"reading the recorder failed: {exc}") from exc
        return next((r for r in rows if r["sha256"] == h.hexdigest()), None)

    def _drop_duplicate(self, copy: StoredCopy, existing: dict[str, Any]) -> None:
        """Same bytes already indexed (maybe archived): keep one copy, never the record's own."""
        own = str(copy.path) == existing.get("local_path") and existing.get("state") != "purged"
        if not copy.reused and not own:
            copy.path.unlink(missing_ok=True)  # a purged clip's old path is no copy of its own
        logger.info(
            "clip %s already in the index; no second copy",
            copy.sha256[:12],
            extra={**self.log_extra, "CLIP_SHA256": copy.sha256},
        )

    def _record(self, clip: ClipEntry, copy: StoredCopy) -> None:
        start = start_time(clip, copy.path, self.docking)
        device = self.docking.identity.device_id
        entry = self.s.custody.append(
            "clip_offloaded",
            device_id=device,
            file=clip.path,
            sha256=copy.sha256,
            size=copy.size,
            bay=self.docking.bay,
            local_path=str(copy.path),
        )
        self.s.custody.append("clip_verified", device_id=device, sha256=copy.sha256, size=copy.size)
        record = new_record(self.docking, clip, copy.sha256, copy.size, copy.path, start, entry)
        roster.annotate(record, self.s.extra.get("roster"))
        record["retention_class"] = retention.classify(record, self.s.cfg.retention)
        self.s.index.put(record)
        self.s.bus.event(
            "clip_offloaded",
            bay=self.docking.bay,
            device_id=device,
            file_name=clip.name,
            sha256=copy.sha256,
            size=copy.size,
        )
        logger.info(
            "offloaded %s (%d bytes)",
            clip.path,
            copy.size,
            extra={**self.log_extra, "CLIP_SHA256": copy.sha256},
        )
