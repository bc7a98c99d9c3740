"""After offload: probe clips, apply the 24-hour rule, find gaps, and write notes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from agent.analysis.late_offload import hours_late, is_late
from agent.analysis.timeline import TimelineClip, TimelinePolicy, analyse
from agent.events import Alert, Analysed, BayView, DockEvent, Offloaded
from agent.evidence.clip_time import span
from agent.evidence.record import Docking
from agent.evidence.retention.classes import flagged
from agent.notes.model import NoteDraft
from agent.notes.store import NotesStore
from agent.timebase import parse_iso, recorder_to_true, utcnow
from firmware_interface.base import Identity

if TYPE_CHECKING:
    from agent.config import DockConfig
    from agent.events import ClipFlow, EventBus
    from agent.evidence.index import ClipIndex
    from agent.evidence.store import EvidenceStore

logger = logging.getLogger(__name__)

PROBED_CLIPS = 64  # probe results written in one transaction at most
PROBED_S = 2.0  # ... and held at most this long (a long video's is not held for the next)


class AnalysisParts(Protocol):
    """The shared, thread-safe parts analysis uses (the daemon's `Services` is one)."""

    @property
    def cfg(self) -> DockConfig:
        """The configuration in force (replaced whole on reload)."""
        ...

    @property
    def tz(self) -> ZoneInfo:
        """The zone recorder local times are in."""
        ...

    @property
    def store(self) -> EvidenceStore:
        """The evidence store."""
        ...

    @property
    def index(self) -> ClipIndex:
        """The clip index."""
        ...

    @property
    def bus(self) -> EventBus:
        """Dock events and alerts."""
        ...

    @property
    def flow(self) -> ClipFlow:
        """A clip's steps."""
        ...


class Analysis:
    """A worker thread that analyses each docking's clips; never blocks offload."""

    def __init__(self, services: AnalysisParts, notes: NotesStore) -> None:
        self.s = services
        self.notes = notes
        self.inbox: queue.Queue[Offloaded | None] = queue.Queue()
        self.heartbeat = time.monotonic()
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="analysis", daemon=True)

    def start(self) -> None:
        """Start the worker; re-queue clips a crash left unanalysed."""
        for batch in self._leftovers():
            self.inbox.put(batch)
        self._thread.start()

    def _leftovers(self) -> list[Offloaded]:
        """Batches of clips offloaded before a crash but never analysed (no event log now)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in self.s.index.find(analysed=False):
            groups.setdefault(record.get("docking_id") or record["device_id"], []).append(record)
        batches = []
        for docking_id, records in groups.items():
            first = records[0]
            identity = Identity(first["device_id"], officer_id=first.get("officer_id") or "")
            docking = Docking(
                docking_id,
                first.get("bay", 0),
                identity,
                first["clock_offset_s"],
                self.s.tz,
                self.s.cfg.dock.id,
                self.s.cfg.dock.department,
            )
            batches.append(Offloaded(docking, tuple(r["clip_id"] for r in records)))
        if batches:
            logger.info("re-queued %d dockings left unanalysed by a restart", len(batches))
        return batches

    def stop(self) -> None:
        """Finish the current batch and stop."""
        self.inbox.put(None)
        self._thread.join(30)

    def submit(self, step: Offloaded) -> None:
        """Flow handler: queue a docking's offloaded clips (never blocks the bay)."""
        self.inbox.put(step)

    def idle(self) -> bool:
        """Nothing queued or running."""
        return self.inbox.empty() and not self.busy

    def healthy(self, stall_s: float) -> bool:
        """False when a batch has been running without progress for `stall_s`."""
        return not self.busy or time.monotonic() - self.heartbeat < stall_s

    def on_dock_item(self, item: BayView | DockEvent | Alert) -> None:
        """Bus listener: a recorder clock the dock corrected becomes a note."""
        if isinstance(item, DockEvent) and item.type == "clock_corrected":
            self.clock_corrected(str(item.fields["device_id"]), item.fields.get("offset_s"))

    def clock_corrected(self, device_id: str, offset_s: float | None) -> None:
        """A recorder clock was set: keep a note people can read later."""
        now = utcnow()
        self.notes.create(NoteDraft("clock_corrected", device_id, now, now, cause="clock_drift"))
        logger.info("clock of %s corrected (offset %s s)", device_id, offset_s)

    def _run(self) -> None:
        while (batch := self.inbox.get()) is not None:
            self.busy = True
            self.heartbeat = time.monotonic()
            try:
                self._analyse(batch)
            except Exception:
                logger.exception("analysis of docking %s failed", batch.docking.docking_id)
            finally:
                self.busy = False

    def _analyse(self, batch: Offloaded) -> None:
        records = [r for r in (self.s.index.get(c) for c in batch.clip_ids) if r is not None]
        probed = _Probed(self.s.index)
        for record in records:
            if not record.get("analysed"):
                probed.add(record, *self._probe(record))
                if probed.due():
                    self._write_probed(probed)
                self.heartbeat = time.monotonic()
        self._write_probed(probed)
        records = [r for r in (self.s.index.get(c) for c in batch.clip_ids) if r is not None]
        self._timeline(records, batch)
        done: dict[str, dict[str, Any]] = {}
        for record in records:
            if not record.get("analysed"):
                if self._lateness(record, batch.docking):
                    self.s.index.update(record["clip_id"], analysed=True)
                else:
                    done[record["clip_id"]] = {"analysed": True}
        self.s.index.update_many(done)  # one transaction for the docking's ordinary clips
        self.s.flow.publish(Analysed(batch.clip_ids))

    def _write_probed(self, probed: _Probed) -> None:
        """Write what probing found (one transaction), then note the clips that need it."""
        for record, changes in probed.write():
            self._clip_note("truncated", record, changes)

    # ---- per clip -------------------------------------------------------------------------

    def _probe(self, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Probe one clip (and make a video's thumbnail): the changes to its record, and
        whether it is truncated or undecodable (a note says so)."""
        from agent.media.probe import probe
        from agent.media.thumbnail import make_thumbnail

        path = Path(record["local_path"])
        result = probe(path, record["media_type"])
        changes: dict[str, Any] = {
            "duration_s": _round(result.duration_s),
            "fps": _round(result.fps),
            "width": result.width,
            "height": result.height,
            "decode_ok": result.decode_ok,
            **flagged(record, result.flags, self.s.cfg.retention),
            "interruptions": result.interruptions,
        }
        changes.update(span(record, result.duration_s))
        if record["media_type"] == "video" and result.decode_ok:
            thumb = path.with_name(f"{path.stem}.thumb.jpg")
            if make_thumbnail(path, thumb, tmp_dir=self.s.store.incoming):
                changes["thumbnail"] = str(thumb)
        return changes, bool({"truncated", "undecodable"} & result.flags)

    def _lateness(self, record: dict[str, Any], docking: Docking) -> bool:
        """Note and announce a clip offloaded past the window: whether it was."""
        window = self.s.cfg.policy.offload_window_hours
        end, offloaded = parse_iso(record["recorded_end"]), parse_iso(record["offloaded_at"])
        if not is_late(end, offloaded, window):
            return False
        late_h = round(hours_late(end, offloaded, window), 1)
        note = self._clip_note("late_offload", record, {})
        self._add_flags(record["clip_id"], {"late_offload"})
        fields = {
            "bay": docking.bay,
            "device_id": record["device_id"],
            "sha256": record["sha256"],
            "file_name": record["file_name"],
            "recorded_end": record["recorded_end"],
            "hours_late": late_h,
            "note_id": note,
        }
        self.s.bus.event("late_offload", **fields)
        self.s.bus.alert(
            "late_offload",
            "warning",
            f"{record['file_name']} offloaded {late_h} h past the {window:g} h window",
            one_off=True,
            **fields,
        )
        return True

    def _clip_note(self, kind: str, record: dict[str, Any], changes: dict[str, Any]) -> str:
        start = parse_iso(changes.get("recorded_start", record["recorded_start"]))
        end = parse_iso(changes.get("recorded_end", record["recorded_end"]))
        note = self.notes.create(
            NoteDraft(kind, record["device_id"], start, end, clips=(record["sha256"],))
        )
        self._attach(record["clip_id"], note.note_id)
        return note.note_id

    def _attach(self, clip_id: str, note_id: str) -> None:
        record = self.s.index.get(clip_id)
        if record is not None and note_id not in record["notes"]:
            self.s.index.update(clip_id, notes=[*record["notes"], note_id])

    # ---- per docking ----------------------------------------------------------------------

    def _timeline(self, records: list[dict[str, Any]], batch: Offloaded) -> None:
        clips = [
            TimelineClip(
                r["sha256"],
                parse_iso(r["recorded_start"]),
                parse_iso(r["recorded_end"]),
                r["device_id"],
                r["file_name"],
                [tuple(i) for i in r.get("interruptions") or []],
            )
            for r in records
            if r["media_type"] in ("video", "audio")
        ]
        policy = self.s.cfg.policy
        result = analyse(
            clips,
            list(batch.events),
            recorder_to_true(self.s.tz, batch.docking.clock_offset_s or 0.0),
            TimelinePolicy(policy.gap_threshold_s, policy.session_break_s),
        )
        for draft in result.notes:
            note = self.notes.create(draft)
            for sha in note.clips:
                self._attach(sha, note.note_id)
            if note.type in ("gap", "interruption", "overlap"):
                self.s.bus.event(
                    "gap_detected",
                    note_id=note.note_id,
                    kind=note.type,
                    device_id=note.device_id,
                    start=note.start,
                    end=note.end,
                    duration_s=note.duration_s,
                    cause=note.cause,
                )
        for sha, flags in result.flags.items():
            self._add_flags(sha, flags)

    def _add_flags(self, clip_id: str, flags: set[str]) -> None:
        """Flags found after offload, read afresh (the timeline's and lateness's add up), with
        the retention class they make stored in the same index change."""
        record = self.s.index.get(clip_id)
        if record is not None and flags - set(record["flags"]):
            self.s.index.update(clip_id, **flagged(record, flags, self.s.cfg.retention))


class _Probed:
    """Probe results not yet written: written together, every PROBED_CLIPS clips or once the
    oldest has waited PROBED_S (a journal line and a sync per photo cost more than its probe)."""

    def __init__(self, index: ClipIndex) -> None:
        self.index = index
        self.held: list[tuple[dict[str, Any], dict[str, Any], bool]] = []
        self.since = 0.0

    def add(self, record: dict[str, Any], changes: dict[str, Any], noted: bool) -> None:
        """Hold a clip's changes; `noted`: it gets a note once they are written."""
        if not self.held:
            self.since = time.monotonic()
        self.held.append((record, changes, noted))

    def due(self) -> bool:
        """Whether the held results are to be written now."""
        return len(self.held) >= PROBED_CLIPS or time.monotonic() - self.since >= PROBED_S

    def write(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Write the held results as one transaction: those of clips that need a note."""
        held, self.held = self.held, []
        self.index.update_many({record["clip_id"]: changes for record, changes, _ in held})
        return [(record, changes) for record, changes, noted in held if noted]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
