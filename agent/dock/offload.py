"""One docking's offload: every clip from the recorder into the store, indexed and logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from agent.dock import roster
from agent.dock.ahead import Ahead, Opened, opened_ahead
from agent.dock.batches import batches, copy_order, files_per_batch, open_files_limit
from agent.dock.parts import DockParts
from agent.dock.pipeline import Pipeline
from agent.dock.proof import recorder_sha256
from agent.dock.room import Room
from agent.evidence.clip_time import StartTime, start_time
from agent.evidence.lifecycle import has_local_copy, new_clip
from agent.evidence.record import Docking, custody_items, dest_rel, new_record
from agent.evidence.retention.classes import flagged
from agent.evidence.store import (
    SMALL,
    CopyCancelled,
    DiskFull,
    SourceReadError,
    Staged,
    StoredCopy,
    VerifyFailed,
    prefetch,
)
from agent.findings import Finding, fault, warning
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
        services: DockParts,
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
        self._handled = 0  # clips of this pass done with: the rest are pending at a stop
        self._starts: dict[str, StartTime] = {}  # by recorder path, from staging to the record
        self._pipeline: Pipeline[OffloadResult]
        self._room = Room(services.store)
        self.log_extra = {
            "DOCK_ID": services.cfg.dock.id,
            "BAY": docking.bay,
            "DEVICE_ID": docking.identity.device_id,
        }

    def run(self, clips: list[ClipEntry]) -> OffloadResult:
        """Offload `clips` (small ones first: batches.copy_order); stop at disk full, undock or
        cancel (RecorderGone raised).

        Groups (a batch of small files, or one large clip) go through a pipeline: while group N
        is staged by this thread, helper threads prove group N-1 (made durable, read back from
        disk, hashed) and place, log and index group N-2 (pipeline.py).
        """
        result = OffloadResult()
        self._prior = self._indexed_files()
        self._handled = 0
        with Pipeline(f"bay{self.docking.bay}", self.s.store, self._record_group) as pipeline:
            self._pipeline = pipeline
            name = f"bay{self.docking.bay}"
            try:
                most = files_per_batch(open_files_limit(), len(self.s.cfg.bay))
                groups_of = list(batches(copy_order(clips), most=most))
                with opened_ahead(name, groups_of, self._open_ahead) as groups:
                    for group, opened in groups:
                        self._group(group, result, opened)
                self._finish_pending(result)
            except DiskFull:
                self._disk_full(result, len(clips) - self._handled)
            except VerifyFailed as exc:
                self._verify_failed(result, exc, len(clips) - self._handled)
            except RecorderGone:
                try:
                    self._finish_pending(result)  # fully copied before the recorder went
                except DiskFull:
                    self._disk_full(result, len(clips) - self._handled)
                except VerifyFailed as exc:
                    self._verify_failed(result, exc, len(clips) - self._handled)
                raise
        return result

    def _group(self, group: list[ClipEntry], result: OffloadResult, opened: Opened) -> None:
        """Stage a group (one large clip, or a batch of small ones) and hand it on.

        A large clip's last window is read back while the next clip is copied; a batch of
        small ones shares one sync. `opened` holds its clips opened ahead (closed here).
        """
        staged: list[tuple[ClipEntry, Staged]] = []
        try:
            full = self._stage_all(group, result, staged, opened)
        except BaseException:
            self.s.store.discard([item for _, item in staged])
            raise
        self._pipeline.submit(staged)
        while self._pipeline.full():
            self._finish(result)
        if full is not None:
            self._finish_pending(result)
            raise full  # after the clips that fitted are stored and indexed, as one by one

    def _record_group(
        self, staged: list[tuple[ClipEntry, Staged]], copies: list[StoredCopy]
    ) -> OffloadResult:
        """In the pipeline's thread: log and index a placed group; what it did."""
        done = OffloadResult()
        self._record_batch([clip for clip, _ in staged], copies, done)
        return done

    def _finish_pending(self, result: OffloadResult) -> None:
        """Finish every group in flight, in order."""
        while self._pipeline.busy():
            self._finish(result)

    def _finish(self, result: OffloadResult) -> None:
        """Wait for the oldest group to be committed (its failure raised here) and count it."""
        staged, done = self._pipeline.next_done()
        result.clip_ids.extend(done.clip_ids)
        result.known += done.known
        result.new += done.new
        for _ in staged:
            self._settle()

    def _stage_all(
        self,
        group: list[ClipEntry],
        result: OffloadResult,
        staged: list[tuple[ClipEntry, Staged]],
        opened: Opened,
    ) -> DiskFull | None:
        """Stage the batch's clips in order; stop at the first that does not fit (returned)."""
        try:
            if self.cancel.is_set():
                raise RecorderGone("offload cancelled: recorder undocked")
            for clip in group:
                try:
                    _check_room(self._room.fits(clip.size))
                    work = partial(self._stage, clip, result, staged, opened.pop(clip.path, None))
                    copied = len(staged)
                    if not self._guarded(work, clip, result):
                        self._settle()
                    for _, item in staged[copied:]:
                        self._room.took(item.size)
                except DiskFull as exc:
                    return exc
            return None
        finally:
            for ahead in opened.values():
                ahead.close()

    def _open_ahead(self, group: list[ClipEntry]) -> Opened:
        """Open the batch's clips and have the recorder's disk start reading them all.

        Small files mean many seeks; asked for together, the disk serves them with a deep
        queue. A clip that cannot be opened now is opened again, with its finding, when staged.
        Runs in a helper thread, a batch ahead of the copy (ahead.py), and makes the temp
        file of each clip not seen before.
        """
        opened: Opened = {}
        for clip in group:
            if clip.size >= SMALL:
                continue  # a large clip is read as it is copied; the disk streams it anyway
            try:
                opened[clip.path] = ahead = Ahead(self.recorder.open_clip(clip))
            except (RecorderError, OSError):
                continue
            prefetch(ahead.src)
            if (clip.path, clip.size) not in self._prior:
                try:
                    ahead.temp = self.s.store.new_temp(f"bay{self.docking.bay}")
                except OSError:
                    pass  # made again when staged, where a full disk is met in order
        return opened

    def _guarded(self, work: Callable[[], None], clip: ClipEntry, result: OffloadResult) -> bool:
        """Run `work` for one clip; a recorder error on it is a warning and the clip pending."""
        try:
            work()
        except RecorderError as exc:
            if isinstance(exc, RecorderGone):
                raise
            result.findings.append(warning(exc.code, f"{clip.path}: {exc}", path=clip.path))
            result.pending += 1
            return False
        return True

    def _settle(self) -> None:
        """One clip is done with (stored, known, or pending after an error)."""
        self._handled += 1
        self.progress(1, 0)

    def _disk_full(self, result: OffloadResult, remaining: int) -> None:
        free = self.s.store.free_bytes()
        msg = f"dock disk full ({free // 2**20} MiB free): offload stopped, nothing deleted"
        result.findings.append(fault("disk_full", msg, free_bytes=free))
        result.pending += remaining
        self.s.bus.alert("disk_full", "critical", msg, bay=self.docking.bay, free_bytes=free)
        logger.error("%s", msg, extra=self.log_extra)

    def _verify_failed(self, result: OffloadResult, exc: VerifyFailed, remaining: int) -> None:
        msg = f"the dock's disk returned other bytes than were written: {exc}; offload stopped"
        result.findings.append(fault("verify_failed", msg))
        result.pending += remaining
        self.s.bus.alert("verify_failed", "critical", msg, bay=self.docking.bay)
        logger.error("%s", msg, extra=self.log_extra)

    def _skip_known(self, clip: ClipEntry, result: OffloadResult) -> bool:
        """Whether this recorder file is already indexed (then counted, not copied)."""
        known = self._known(clip)
        if known is None:
            return False
        result.clip_ids.append(known["clip_id"])
        result.known += 1
        self.progress(0, clip.size)
        return True

    def _stage(
        self,
        clip: ClipEntry,
        result: OffloadResult,
        staged: list[tuple[ClipEntry, Staged]],
        ahead: Ahead | None = None,
    ) -> None:
        """Copy and hash one clip into `.incoming`, unless it is already indexed."""
        if self._skip_known(clip, result):
            if ahead is not None:
                ahead.close()
            self._settle()
            return
        logger.debug("copying %s (%d bytes)", clip.path, clip.size, extra=self.log_extra)
        try:
            with ahead.src if ahead is not None else self.recorder.open_clip(clip) as src:
                dest = self._dest(clip)
                item = self.s.store.stage(
                    src,
                    dest,
                    f"bay{self.docking.bay}",
                    lambda n: self.progress(0, n),
                    self.cancel,
                    large=clip.size >= SMALL,
                    temp=ahead.take_temp() if ahead is not None else None,
                    expect=clip.size,
                )
        except (SourceReadError, CopyCancelled) as exc:  # what was proved before is kept
            raise RecorderGone(str(exc)) from exc
        finally:
            if ahead is not None:
                ahead.close()  # its temp file, if stage() did not take it
        staged.append((clip, item))

    def _dest(self, clip: ClipEntry) -> Path:
        """Where the clip goes, by its start time (decided here, once, and kept for its record)."""
        d = self.docking
        start = start_time(clip, d.tz, d.clock_offset_s, partial(self.recorder.open_clip, clip))
        self._starts[clip.path] = start
        return dest_rel(d, start.start, clip)

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
        _, sha = recorder_sha256(self.recorder, clip)
        return next((r for r in rows if r["sha256"] == sha), None)

    def _drop_duplicate(self, copy: StoredCopy, existing: dict[str, Any]) -> None:
        """Same bytes already indexed (maybe archived): keep one copy, never the record's own."""
        own = str(copy.path) == existing.get("local_path") and has_local_copy(existing)
        if not copy.reused and not own:
            copy.path.unlink(missing_ok=True)  # a purged clip's old path is no copy of its own
        logger.info(
            "clip %s already in the index; no second copy",
            copy.sha256[:12],
            extra={**self.log_extra, "CLIP_SHA256": copy.sha256},
        )

    def _record_batch(
        self, clips: list[ClipEntry], copies: list[StoredCopy], result: OffloadResult
    ) -> None:
        """Custody entries of the batch (one fsync), then its index rows (one), then events."""
        fresh: dict[str, tuple[ClipEntry, StoredCopy]] = {}
        indexed = self.s.index.get_many(copy.sha256 for copy in copies)  # one look for all
        for clip, copy in zip(clips, copies, strict=True):
            existing = self._existing(copy, fresh, indexed)
            result.clip_ids.append(copy.sha256)
            if existing is not None:
                self._drop_duplicate(copy, existing)
                result.known += 1
            else:
                fresh[copy.sha256] = (clip, copy)
        if not fresh:
            return
        entries = self.s.custody.append_many(
            [
                item
                for clip, copy in fresh.values()
                for item in custody_items(self.docking, clip, copy.sha256, copy.size, copy.path)
            ]
        )
        records = [
            self._new_record(clip, copy, entry)
            for (clip, copy), entry in zip(fresh.values(), entries[::2], strict=True)
        ]
        self.s.index.put_many(records)
        for clip, copy in fresh.values():
            self._announce(clip, copy)
            result.new += 1

    def _existing(
        self,
        copy: StoredCopy,
        fresh: dict[str, tuple[ClipEntry, StoredCopy]],
        indexed: dict[str, dict[str, Any]],
    ) -> dict[str, Any] | None:
        """The index row of the same bytes (`indexed`: the batch's, looked up at once), or an
        earlier copy of them in this batch."""
        if copy.sha256 in fresh:
            return {"local_path": str(fresh[copy.sha256][1].path), **new_clip()}
        return indexed.get(copy.sha256)

    def _new_record(
        self, clip: ClipEntry, copy: StoredCopy, entry: dict[str, Any]
    ) -> dict[str, Any]:
        start = self._starts.pop(clip.path)
        record = new_record(self.docking, clip, copy.sha256, copy.size, copy.path, start, entry)
        roster.annotate(record, self.s.roster)
        record.update(flagged(record, (), self.s.cfg.retention))
        return record

    def _announce(self, clip: ClipEntry, copy: StoredCopy) -> None:
        self.s.bus.event(
            "clip_offloaded",
            bay=self.docking.bay,
            device_id=self.docking.identity.device_id,
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


def _check_room(has_room: bool) -> None:
    if not has_room:
        raise DiskFull("not enough room for the next clip and the reserve")
