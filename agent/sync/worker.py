"""Evidence sync upstream (SPEC 7): clips in priority order, resumable, then the recorder is freed.

Clips come to sync as `Analysed` steps (and, once at start-up, from a scan of the active index
for clips analysed before a restart but never acked); a synced clip goes on as a `Synced` step.
Nothing here polls the index: the thread sleeps until a step, a resync, a reconnect, the
next retry or a free lane is due. It starts clips in priority order on a few lanes
(agent/sync/lanes.py) that deliver them at once, so one clip's round trips overlap another's
segments.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.chain.pacer import pacer_for
from agent.events import Analysed, ClipFlow, Freed, Offloaded
from agent.evidence.lifecycle import acked_upstream, has_local_copy, proven
from agent.evidence.record import manifest
from agent.mqtt.connection import MqttConnection
from agent.notes.model import Note
from agent.notes.store import NotesStore
from agent.sync import acked
from agent.sync.delivery import Delivery
from agent.sync.lanes import LANES, Lanes
from agent.sync.outbox import Outbox
from agent.sync.parcel import Parcels
from agent.sync.parts import SyncParts
from agent.sync.queue import DEFAULT_BACKOFF, Backoff, idle_wait, next_due, priority, to_send
from agent.sync.resync import ResyncQueue
from agent.transfer.sender import (
    FileSender,
    QuotaExceeded,
    ReceiptInvalid,
    SendResult,
    SendSettings,
    TransferFailed,
    TransferInterrupted,
)
from agent.transfer.signing import Signer
from agent.trust.dock import DockTrust

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 60.0  # the longest sleep with nothing due (a step, resync or reconnect wakes it)
FORGERIES_REMEMBERED = 4096  # clips already alerted for a forged answer (receipt_invalid)


class Sync:
    """Daemon plugin: sends clips on a few lanes and marks each synced on its successful fins."""

    def __init__(
        self,
        services: SyncParts,
        conn: MqttConnection,
        notes: NotesStore,
        flow: ClipFlow,
        outbox: Outbox,
        trust: DockTrust,
        backoff: Backoff = DEFAULT_BACKOFF,
        lanes: int = LANES,
    ) -> None:
        """Send what `flow` says was analysed; publish each clip acked as `Synced` on it.

        `backoff`: the wait after a clip's failures in a row, and after central's "no room"
        answers (the default: 30 s, doubled at each failure, at most 900 s). `lanes`: clips
        delivered at once.
        """
        self.backoff = backoff
        self.s = services
        self.outbox = outbox
        self.conn = conn
        self.notes = notes
        self.flow = flow
        cfg = services.cfg
        receipts = cfg.mqtt.upstream == "receiver"
        signer = Signer(cfg.client_id, trust.signing_key, trust.central_key, receipts)
        self.sender = FileSender(
            conn, cfg.client_id, cfg.data_dir / "transfer", SendSettings.from_mqtt(cfg.mqtt), signer
        )
        self.sender.on_forged = self._forged
        self.chain = pacer_for(cfg, trust.signing_key, self.sender, self.wake, services.bus)
        self.proves_acks = trust.proves_acks
        self._lane = threading.local()  # .record: the clip the calling lane delivers
        self.forgery_told: dict[str, None] = {}  # clips receipt_invalid was raised for
        self._state_lock = threading.Lock()  # forgery_told, receiver_full, paused_until
        self.parcels = Parcels(cfg.data_dir / "transfer" / "manifests")
        self.delivery = Delivery(
            self.sender, self.chain, self.parcels, cfg.dock.id, self.manifest_of, self._in_lane
        )
        self.pending: dict[str, tuple[int, str]] = {}  # analysed, not acked: clip -> priority
        self._pending_lock = threading.Lock()
        self.retry_at: dict[str, float] = {}
        self.failures: dict[str, int] = {}  # failures in a row, per clip
        self.receiver_full = 0  # "no space" answers in a row: the whole queue waits
        self.paused_until = 0.0
        self.resync = ResyncQueue()  # clips to resend first
        self.heartbeat = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._chain_go = threading.Event()  # the chain's thread: a flush is due
        self._chain_thread = threading.Thread(
            target=self._chain_run, name="sync-chain", daemon=True
        )
        self.lanes = Lanes(lanes, self._lane_deliver, self.wake)
        notes.on_change.append(self._note_changed)
        flow.subscribe(Analysed, self.analysed)
        flow.subscribe(Offloaded, self.chain.listen)  # a docking's end: its chain goes up
        flow.subscribe(Freed, self.chain.listen)  # ... and the recorder's deletions after it
        services.bus.subscribe(self.chain.listen)  # ... and the undocking's entry (SPEC 8.1)

    def start(self) -> None:
        """Start sending in the background (a reconnect wakes the thread)."""
        self.conn.add_on_connect(self.wake)
        self.lanes.start()
        self._chain_thread.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current segment windows; acked offsets are kept for resume."""
        deadline = time.monotonic() + 30
        self._stop.set()
        self._wake.set()
        self._chain_go.set()
        self._thread.join(30)
        self._chain_thread.join(max(0.0, deadline - time.monotonic()))
        self.lanes.stop(max(0.0, deadline - time.monotonic()))

    @property
    def busy(self) -> bool:
        """Whether a lane is delivering a clip."""
        return self.lanes.busy()

    @property
    def sending(self) -> dict[str, Any] | None:
        """The clip the calling lane delivers (None on any other thread)."""
        record: dict[str, Any] | None = getattr(self._lane, "record", None)
        return record

    def wake(self) -> None:
        """Look for work now (a clip was analysed, a resync asked, the broker is back)."""
        self._wake.set()

    def analysed(self, step: Analysed) -> None:
        """Flow handler: queue the step's clips that await sync (called on analysis's thread)."""
        self._queue(r for r in map(self.s.index.get, step.clip_ids) if r is not None)
        self.wake()

    def _queue(self, records: Iterable[dict[str, Any]]) -> None:
        with self._pending_lock:
            for record in records:
                if self._to_send(record):
                    self.pending[record["clip_id"]] = priority(record)

    def _to_send(self, record: dict[str, Any]) -> bool:
        """Not acked yet; or acked without proof while receipts can now be checked (SPEC 11)."""
        return to_send(record, self.proves_acks)

    def healthy(self, stall_s: float) -> bool:
        """False when a lane delivering a clip showed no sign of life for `stall_s`.

        A send waits in bounded steps (an answer, the link, a fin EMQX answers after assembly,
        up to fin_timeout_s): each step counts as life, so a long clip or a slow fin is healthy;
        so does a lane's wait while another sends the custody chunk its clip needs.
        """
        return self.lanes.healthy(stall_s, self.sender.alive_at)

    def tick(self) -> None:
        """Pick up explanations added by other processes (`dock-agent notes add`)."""
        self.notes.refresh()

    def resync_room(self, clip_id: str) -> bool:
        """True when a resync of `clip_id` can be queued (or is queued already)."""
        return self.resync.room(clip_id)

    def request_resync(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The `resync` command: send a clip again (central lost it)."""
        record = self.s.index.get(payload["clip_id"])
        if record is None:
            raise KeyError(f"unknown clip {payload['clip_id']}")
        if not has_local_copy(record) or not Path(record["local_path"]).exists():
            raise ValueError("the local copy was purged after its upstream ack; nothing to resend")
        self.resync.add(record["clip_id"])
        self.wake()
        return {"queued": record["clip_id"], "file_name": record["file_name"]}

    # ---- loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        # Once: clips analysed before a restart and never acked (no step will name them again),
        # and clips acked without proof before central's key was enrolled (sent again for it).
        self._queue(self.s.index.active())
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            paused = time.monotonic() < self.paused_until
            if not paused and self.conn.connected and self.chain.due():
                self._chain_go.set()  # SPEC 8.1: at a docking's end, each period
            # After central said it had no room, one clip probes it before the lanes fill again.
            room = self.lanes.free() if not self.receiver_full else not self.lanes.busy()
            ready = not paused and self.conn.connected and room
            record = self._next() if ready else None
            if record is None:
                self._wake.wait(self._idle_wait(paused))
                self._wake.clear()
                continue
            self.lanes.submit(record)  # in priority order; a lane's end wakes this thread

    def _chain_run(self) -> None:
        """Send the chain's due chunks on a thread of their own: clips go on meanwhile (each
        lane still waits, before its clip, for the chunk holding the clip's entry)."""
        while not self._stop.is_set():
            self._chain_go.wait()
            self._chain_go.clear()
            if not self._stop.is_set():
                self.chain.send_due(self._stop)

    def _lane_deliver(self, record: dict[str, Any]) -> None:
        """A lane's work: one clip, whatever happens to it."""
        try:
            self._send(record)
        except Exception:
            logger.exception("sync of %s failed unexpectedly", record["clip_id"][:12])
            self._failed(record["clip_id"])

    def _next(self) -> dict[str, Any] | None:
        busy = self.lanes.clips()
        while (clip_id := self.resync.take(busy)) is not None:
            record = self.s.index.get(clip_id)
            if record is not None and has_local_copy(record):
                return record
        while True:
            with self._pending_lock:
                clip_id = next_due(self.pending, time.monotonic(), self.retry_at, busy)
            if clip_id is None:
                return None
            record = self.s.index.get(clip_id)
            if record is not None and self._to_send(record):
                return record
            self._sent(clip_id)  # acked or gone meanwhile: nothing to send

    def _idle_wait(self, paused: bool) -> float:
        """How long to sleep: until the pause ends or the earliest retry (a wake cuts it short)."""
        if not self.conn.connected:
            return IDLE_WAIT_S
        if paused:
            return max(0.0, self.paused_until - time.monotonic())
        with self._pending_lock:
            return idle_wait(self.pending, time.monotonic(), self.retry_at, IDLE_WAIT_S)

    def _sent(self, clip_id: str) -> None:
        with self._pending_lock:
            self.pending.pop(clip_id, None)
            self.retry_at.pop(clip_id, None)

    def _send(self, record: dict[str, Any]) -> None:
        clip_id = record["clip_id"]
        extra = {
            "DOCK_ID": self.s.cfg.dock.id,
            "DEVICE_ID": record["device_id"],
            "CLIP_SHA256": clip_id,
        }
        try:
            self._in_lane(record)
            results = self._deliver(record)
        except TransferInterrupted as exc:
            logger.info("sync of %s interrupted: %s", record["file_name"], exc, extra=extra)
            return
        except QuotaExceeded as exc:
            self._receiver_full(record, exc)
            return
        except TransferFailed as exc:
            delay = self._failed(clip_id)
            logger.warning(
                "sync of %s failed: %s; next try in %.0f s",
                record["file_name"],
                exc,
                delay,
                extra=extra,
            )
            if not isinstance(exc, ReceiptInvalid):  # that one was raised when it was seen
                self.s.bus.alert(
                    "sync_failed",
                    "warning",
                    f"{record['file_name']}: {exc}; next try in {delay:.0f} s",
                    one_off=True,
                    sha256=clip_id,
                )
            return
        finally:
            self._in_lane(None)
        self.failures.pop(clip_id, None)
        self._sent(clip_id)
        with self._state_lock:
            self.receiver_full = 0
        sent = sum(r.segments_sent for r in results)
        logger.info("synced %s (%d segments sent)", record["file_name"], sent, extra=extra)
        if not acked_upstream(record):
            acked.synced(self.s, self.flow, self.proves_acks, record)
        elif self.proves_acks and not proven(record):
            acked.proven(self.s, self.flow, self.proves_acks, record)

    def _deliver(self, record: dict[str, Any]) -> list[SendResult]:
        """The chain to the clip's entry (SPEC 8.1), the clip and its manifest (7.1) at once."""
        return self.delivery(record, self._stop, self.lanes.touch)

    def _in_lane(self, record: dict[str, Any] | None) -> None:
        self._lane.record = record

    def _forged(self, file_id: str) -> None:
        """A broker client answered a fin "success" without central's receipt: told once per clip."""
        record = self.sending
        clip_id = record["clip_id"] if record else file_id
        with self._state_lock:
            if clip_id in self.forgery_told:
                return
            self.forgery_told[clip_id] = None
            while len(self.forgery_told) > FORGERIES_REMEMBERED:
                del self.forgery_told[next(iter(self.forgery_told))]
        name = record["file_name"] if record else f"custody log chunk {file_id[:12]}"
        self.s.bus.alert(
            "receipt_invalid",
            "error",
            f"{name}: a fin was answered 'success' without central's valid receipt (a client on "
            "the broker answers for the receiver); ignored, the clip waits for central's answer",
            one_off=True,
            sha256=clip_id,
            **({} if record else {"kind": "custody"}),  # only chunks go without a clip
        )

    def _failed(self, clip_id: str) -> float:
        """Count a failure of `clip_id` and schedule its next try; returns the delay."""
        self.failures[clip_id] = n = self.failures.get(clip_id, 0) + 1  # one lane per clip
        delay = self.backoff.delay(n)
        with self._pending_lock:
            self.retry_at[clip_id] = time.monotonic() + delay
        return delay

    def _receiver_full(self, record: dict[str, Any], exc: QuotaExceeded) -> None:
        """Central has no room: every clip would fail alike, so the whole queue waits (one alert;
        the other lanes' clips that meet the same answer meanwhile neither lengthen it nor alert)."""
        with self._state_lock:
            if time.monotonic() < self.paused_until:
                logger.info("central has no room for %s either", record["file_name"])
                return
            self.receiver_full += 1
            delay = self.backoff.delay(self.receiver_full)
            self.paused_until = time.monotonic() + delay
        message = f"central has no room for {record['file_name']}: {exc}; sync paused {delay:.0f} s"
        logger.error("%s", message, extra={"DOCK_ID": self.s.cfg.dock.id})
        self.s.bus.alert("sync_failed", "error", message, one_off=True, sha256=record["clip_id"])

    # ---- manifest and notes ---------------------------------------------------------------

    def manifest_of(self, record: dict[str, Any]) -> dict[str, Any]:
        """SPEC 7 MANIFEST with the clip's notes in full (explanations included)."""
        data = manifest(record)  # retention_class as stored with the flags (retention.classes)
        notes = [self.notes.get(note_id) for note_id in record.get("notes") or []]
        data["notes"] = [n.to_json() for n in notes if n is not None]
        return data

    def _note_changed(self, kind: str, note: Note) -> None:
        """A note created or explained after its clip was sent goes on R/notes (QoS 1)."""
        records = [self.s.index.get(c) or {} for c in note.clips]
        synced = [r for r in records if acked_upstream(r)]
        if not synced:
            return  # not sent yet: the manifest will carry it
        self.outbox.put(note.note_id, note.to_json() | {"change": kind})
