"""A bay's worker: one thread, one state machine (SPEC 6), whatever the recorder does."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from agent.dock.checks import (
    STATUS_CODES,
    awaiting_ack,
    bay_state,
    check_battery,
    check_faults,
    check_storage,
    storage_free_pct,
    whole_pct,
)
from agent.dock.clock_check import ClockCheck
from agent.dock.deletion import Outcome, RecorderDeleter
from agent.dock.emit import ThrottledSend
from agent.dock.offload import Offloader
from agent.dock.parts import DockParts
from agent.events import BayView, Offloaded, Progress, now_iso
from agent.evidence.lifecycle import RECORDER_PENDING, deletable, recorder_handled
from agent.evidence.record import Docking
from agent.findings import Finding, fault, info
from firmware_interface.base import Recorder, RecorderError, RecorderGone, Status
from firmware_interface.discovery import BayFault, BayWaiting, DiscoveryEvent, Docked, Undocked
from firmware_interface.event_log import read_events_of

logger = logging.getLogger(__name__)

EMIT_INTERVAL_S = 0.25


@dataclass(frozen=True)
class ClipSynced:
    """The central side holds this clip: the recorder copy may go, per policy."""

    clip_id: str


@dataclass(frozen=True)
class BayTask:
    """Work run on the bay's own thread between its events (an officer binding, SPEC 5)."""

    run: Callable[[BayWorker], None]


class _Stop:
    pass


class BayWorker:
    """Owns one bay: identifies, validates, offloads, then watches the docked recorder."""

    def __init__(self, number: int, services: DockParts, refresh_s: float = 5.0) -> None:
        self.number = number
        self.s = services
        self.refresh_s = refresh_s
        self.view = BayView(number)
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.cancel = threading.Event()
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self.recorder: Recorder | None = None
        self.docking: Docking | None = None
        self.findings: list[Finding] = []
        self.unfreed: set[str] = set()  # the docked recorder's clips whose copy is still there
        self._emit = ThrottledSend(self._send_view, EMIT_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name=f"bay-{number}", daemon=True)

    # ---- public ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and show the bay as empty."""
        self._emit(force=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel any copy and stop the thread."""
        self.cancel.set()
        self.inbox.put(_Stop())
        self._thread.join(timeout)
        self._emit.close()

    def post(self, item: DiscoveryEvent | ClipSynced | BayTask) -> None:
        """Hand the worker an event; an undock cancels a running copy at once."""
        if isinstance(item, Undocked):
            self.cancel.set()
        self.inbox.put(item)

    def show(self, **changes: Any) -> None:
        """Change the bay's view and publish it now."""
        self.view = replace(self.view, **changes)
        self._emit(force=True)

    def healthy(self, stall_s: float) -> bool:
        """False when the worker has made no progress for `stall_s` while busy."""
        return self.busy_since is None or time.monotonic() - self.heartbeat < stall_s

    # ---- loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            try:
                item = self.inbox.get(timeout=self.refresh_s)
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                self._release()
                return
            try:
                self._handle(item)
            except Exception:  # a recorder must never take the daemon down
                logger.exception("bay %d: unexpected error", self.number, extra=self._extra())
                self._set_fault(fault("internal_error", "unexpected error; see the journal"))

    def _handle(self, item: Any) -> None:
        self.busy_since = time.monotonic()
        try:
            if isinstance(item, Docked):
                self._docked(item)
            elif isinstance(item, Undocked):
                self._undocked()
            elif isinstance(item, BayWaiting):
                self._waiting(info(item.code, item.message))
            elif isinstance(item, BayFault):
                self._set_fault(fault(item.code, item.message))
                self.s.bus.alert("recorder_fault", "error", item.message, bay=self.number)
            elif isinstance(item, ClipSynced):
                self._clip_synced(item.clip_id)
            elif isinstance(item, BayTask):
                item.run(self)
            elif item is None and self.recorder is not None:
                self._refresh()
        finally:
            self.busy_since = None

    # ---- docking --------------------------------------------------------------------------

    def _docked(self, ev: Docked) -> None:
        if self.recorder is not None:
            self._release()
        self.cancel.clear()
        self.recorder = ev.recorder
        self.findings = []
        self.view = BayView(self.number, state="identifying")
        self._emit(force=True)
        try:
            self._acquire(ev.recorder)
        except RecorderGone as exc:
            logger.warning(
                "bay %d: recorder gone mid-work: %s", self.number, exc, extra=self._extra()
            )
            self._undocked()
        except RecorderError as exc:
            self._set_fault(fault(exc.code, str(exc)))
            self.s.bus.alert("recorder_fault", "error", str(exc), bay=self.number)

    def _acquire(self, recorder: Recorder) -> None:
        identity = recorder.identity()
        self.findings.extend(recorder.identity_findings())
        docking_id = f"{identity.device_id}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        self.view = replace(
            self.view,
            device_id=identity.device_id,
            officer_id=identity.officer_id,
            state="validating",
        )
        self._emit(force=True)
        self.s.custody.append(
            "docked",
            device_id=identity.device_id,
            bay=self.number,
            officer_id=identity.officer_id,
            model=identity.model,
            firmware=identity.firmware,
            docking_id=docking_id,
        )
        self.s.bus.event(
            "docked", bay=self.number, device_id=identity.device_id, officer_id=identity.officer_id
        )
        offset, size = self._validate(recorder, identity.device_id)
        self.docking = Docking(
            docking_id,
            self.number,
            identity,
            offset,
            self.s.tz,
            self.s.cfg.dock.id,
            self.s.cfg.dock.department,
            f"{size[0]}x{size[1]}" if size else None,
        )
        self._offload(recorder, self.docking)

    def _validate(
        self, recorder: Recorder, device_id: str
    ) -> tuple[float | None, tuple[int, int] | None]:
        """Check and set the clock; the measured offset and the recording resolution."""
        status = recorder.status()
        offset = ClockCheck(self.s, self.number, recorder, device_id).run(status, self.findings)
        self._apply_status(recorder, status)
        return offset, status.resolution

    # ---- offload --------------------------------------------------------------------------

    def _offload(self, recorder: Recorder, docking: Docking) -> None:
        listing = recorder.list_clips()
        self.findings.extend(listing.findings)
        clips = sorted(listing.clips, key=lambda c: (c.mtime, c.path))
        total = sum(c.size for c in clips)
        self.view = replace(
            self.view, state="offloading", progress=Progress(0, len(clips), 0, total)
        )
        self._emit(force=True)
        result = Offloader(self.s, docking, recorder, self.cancel, self._progress).run(clips)
        self.findings.extend(result.findings)
        self._after_offload(recorder, docking, result.clip_ids, result.pending)

    def _progress(self, clips: int, nbytes: int) -> None:
        self.heartbeat = time.monotonic()
        p = self.view.progress
        p.clips_done += clips
        p.bytes_done += nbytes
        self._emit()

    def _after_offload(
        self, recorder: Recorder, docking: Docking, clip_ids: list[str], pending: int
    ) -> None:
        device = docking.identity.device_id
        self.s.bus.event(
            "offload_complete",
            bay=self.number,
            device_id=device,
            clips=len(clip_ids),
            pending=pending,
        )
        self.s.custody.append(
            "offload_complete",
            device_id=device,
            docking_id=docking.docking_id,
            clips=len(clip_ids),
            pending=pending,
        )
        events = read_events_of(recorder)
        self.findings.extend(events.findings)
        if clip_ids:
            self.s.flow.publish(Offloaded(docking, tuple(clip_ids), tuple(events.events)))
        # This pass's clips and any earlier ones whose recorder copy is still to be handled
        # (acked while the recorder was away, or a deletion a crash interrupted).
        waiting = {r["clip_id"]: r for r in self.s.index.find(device_id=device, **RECORDER_PENDING)}
        policy = self.s.cfg.delete_policy
        tried = False
        for clip_id in dict.fromkeys([*clip_ids, *waiting]):
            row = waiting.get(clip_id)
            if row is not None and not deletable(row, policy):
                continue  # kept for now: a later ack comes to this bay as ClipSynced
            tried = True
            self._maybe_delete(clip_id)
        self.unfreed = (
            {r["clip_id"] for r in self.s.index.find(device_id=device, **RECORDER_PENDING)}
            if tried
            else set(waiting)
        )
        self._refresh()

    # ---- recorder deletion ----------------------------------------------------------------

    def _clip_synced(self, clip_id: str) -> None:
        if self.recorder is not None:
            self._maybe_delete(clip_id)
            record = self.s.index.get(clip_id)
            if record is None or recorder_handled(record):
                self.unfreed.discard(clip_id)
            self._refresh()

    def _maybe_delete(self, clip_id: str) -> None:
        """Delete the recorder's copy once the policy's condition holds and it is proved (SPEC 9)."""
        if self.recorder is None or self.docking is None:
            return
        deleter = RecorderDeleter(self.s, self.recorder, self.docking.identity.device_id)
        result = deleter.delete(clip_id)
        if result.finding is not None:
            self.findings.append(result.finding)
        if result.outcome is Outcome.REPLACED:
            self._offload(self.recorder, self.docking)  # the new bytes are a new clip

    # ---- status ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        assert self.recorder is not None
        try:
            status = self.recorder.status()
        except RecorderGone:
            self._undocked()
            return
        except RecorderError as exc:
            self._set_fault(fault(exc.code, str(exc)))
            return
        self._apply_status(self.recorder, status)

    def _apply_status(self, recorder: Recorder, status: Status) -> None:
        policy = self.s.cfg.policy
        keep = [f for f in self.findings if f.code not in STATUS_CODES]
        waiting = self._awaiting_ack()
        self.findings = (
            keep
            + check_battery(status, policy)
            + check_storage(status, policy)
            + check_faults(status)
            + waiting
        )
        pending = self.view.progress.clips_total - self.view.progress.clips_done
        state = bay_state(self.findings, pending if self.view.state == "offloading" else 0)
        if self.view.state in ("identifying", "validating"):
            state = self.view.state
        view = replace(
            self.view,
            state=state,
            battery_pct=whole_pct(status.battery_pct),
            storage_free_pct=storage_free_pct(status),
            clock_offset_s=self.docking.clock_offset_s if self.docking else None,
            findings=list(self.findings),
        )
        if view != self.view:  # a charging battery's fractions are no news (SPEC 12)
            self.view = view
            self._emit(force=True)

    def _awaiting_ack(self) -> list[Finding]:
        if self.docking is None or self.s.cfg.delete_policy != "after_upstream_ack":
            return []
        return awaiting_ack(len(self.unfreed))  # kept up to date: no index query per refresh

    def _waiting(self, finding: Finding) -> None:
        """A recorder is in the bay and waits its turn: `identifying`, saying why."""
        if self.recorder is None:
            self.findings = [finding]
            self.view = BayView(self.number, state="identifying", findings=[finding])
            self._emit(force=True)

    def _set_fault(self, finding: Finding) -> None:
        self.findings.append(finding)
        self.view = replace(self.view, state="fault", findings=list(self.findings))
        self.s.bus.event("fault", bay=self.number, code=finding.code, message=finding.message)
        self._emit(force=True)

    def _undocked(self) -> None:
        device = self.docking.identity.device_id if self.docking else self.view.device_id
        self._release()
        if device:
            self.s.custody.append("undocked", device_id=device, bay=self.number)
            self.s.bus.event("undocked", bay=self.number, device_id=device)
        self.view = BayView(self.number)
        self.findings = []
        self._emit(force=True)

    def _release(self) -> None:
        if self.recorder is not None:
            try:
                self.recorder.close()
            except Exception:
                logger.exception("bay %d: closing the recorder failed", self.number)
        self.recorder = None
        self.docking = None
        self.unfreed = set()

    def _send_view(self) -> None:
        self.view.ts = now_iso()
        self.s.bus.emit(
            replace(
                self.view, progress=replace(self.view.progress), findings=list(self.view.findings)
            )
        )

    def _extra(self) -> dict[str, Any]:
        return {
            "DOCK_ID": self.s.cfg.dock.id,
            "BAY": self.number,
            "DEVICE_ID": self.view.device_id or "",
        }
