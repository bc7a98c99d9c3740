"""The segments of one transfer: pipelined within the connection's window, resent on failure.

A mixin of FileSender (agent/transfer/sender.py): several sends may run at once on their own
threads; their segments share one window of `max_inflight` unanswered (agent/transfer/window).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agent.transfer import protocol as p
from agent.transfer.exchange import Answer, Exchange, poll
from agent.transfer.link import Transport
from agent.transfer.outcome import (
    QuotaExceeded,
    SendResult,
    SendSettings,
    TransferFailed,
    TransferInterrupted,
)
from agent.transfer.outcome import why as _why
from agent.transfer.ratelimit import TokenBucket
from agent.transfer.resume import ResumeState
from agent.transfer.window import Window

logger = logging.getLogger(__name__)

LINK_POLL_S = 0.1  # how often a wait for one answer checks that the link is still up


@dataclass
class Job:
    fd: int
    file_id: str
    meta: p.FileMeta
    answers: queue.Queue[Answer]
    cancel: threading.Event
    result: SendResult = field(default_factory=SendResult)


@dataclass
class Slot:
    offset: int
    deadline: float
    failure: p.Response | None = None  # held until the deadline: a success may still come


class Segments:
    """Sends a transfer's segments; FileSender provides the connection and its settings."""

    transport: Transport
    settings: SendSettings
    signer: Any
    exchange: Exchange
    window: Window
    active_at: float
    _alive: dict[int, float]
    _bucket: TokenBucket

    def _touch(self) -> None:
        self.active_at = self._alive[threading.get_ident()] = time.monotonic()

    def _send_segments(self, job: Job, todo: deque[int], state: ResumeState) -> None:
        """Keep segments unanswered, within the connection's window, until all are acknowledged."""
        inflight: dict[bytes, Slot] = {}
        tries: dict[int, int] = {}
        self.window.join()
        try:
            while todo or inflight:
                wait = 0.0 if inflight else LINK_POLL_S
                if todo and self.window.take(self.settings.max_inflight, len(inflight), wait):
                    try:
                        corr = self._send_segment(job, todo[0])
                    except BaseException:
                        self.window.give()
                        raise
                    inflight[corr] = Slot(todo.popleft(), self._deadline())
                    got = poll(job.answers)
                elif inflight:
                    got = self._next_answer(job, min(s.deadline for s in inflight.values()))
                    if got is None:
                        self._expire(job, inflight, todo, tries)
                else:  # the other sends hold the whole window: wait for a slot
                    got = self._next_answer(job, time.monotonic())
                if got is not None:
                    self._settle(job, got, inflight, todo, tries, state)
        finally:
            self.window.give(len(inflight))
            self.window.leave()

    def _settle(
        self,
        job: Job,
        got: Answer,
        inflight: dict[bytes, Slot],
        todo: deque[int],
        tries: dict[int, int],
        state: ResumeState,
    ) -> None:
        """Apply one answer: success is remembered, failure resends the segment."""
        slot = inflight.get(got[0])
        if slot is None:
            return
        if not got[1].ok and slot.failure is None and self._holds(job, slot.offset, got):
            slot.failure = got[1]  # any broker client may answer so; the receiver's comes too
            return
        del inflight[got[0]]
        self.window.give()
        self.exchange.forget(got[0])
        if got[1].ok:
            state.ack(slot.offset)
        else:
            self._retry(job, slot.offset, got[1], todo, tries)

    def _holds(self, job: Job, offset: int, got: Answer) -> bool:
        """Whether a segment's failure waits for a proved success: not one central signed."""
        if self.signer is None or not self.signer.holds_failures:
            return False
        size = min(self.settings.segment_bytes, job.meta.size - offset)
        read = partial(os.pread, job.fd, size, offset)  # only for a failure that has a receipt
        return not self.signer.segment_refused(self.settings.prefix, job.file_id, offset, read, got)

    def _send_segment(self, job: Job, offset: int) -> bytes:
        length = min(self.settings.segment_bytes, job.meta.size - offset)
        data = os.pread(job.fd, length, offset)
        self._touch()
        if not self._bucket.take(len(data), job.cancel):
            raise TransferInterrupted(f"{job.file_id}: cancelled")
        digest = p.sha256_hex(data)
        topic = p.segment_topic(self.settings.prefix, job.file_id, offset, digest)
        job.result.segments_sent += 1
        job.result.bytes_sent += len(data)
        sign = self.signer.segment_property if self.signer else None
        prop = sign(job.file_id, offset, data, digest) if sign else None
        return self.exchange.publish(job.answers, topic, data, prop)

    def _expire(
        self, job: Job, inflight: dict[bytes, Slot], todo: deque[int], tries: dict[int, int]
    ) -> None:
        """Handle silence: wait out a lost connection, else resend what timed out."""
        if not self.transport.wait_connected(0):
            self._await_link(job)
            for slot in inflight.values():
                slot.deadline = self._deadline()
            return
        now = time.monotonic()
        for corr, slot in list(inflight.items()):
            if slot.deadline <= now:
                del inflight[corr]
                self.window.give()
                self.exchange.forget(corr)
                self._retry(job, slot.offset, slot.failure, todo, tries)

    def _retry(
        self,
        job: Job,
        offset: int,
        answer: p.Response | None,
        todo: deque[int],
        tries: dict[int, int],
    ) -> None:
        tries[offset] = tries.get(offset, 0) + 1
        if p.no_room(answer):
            raise QuotaExceeded(f"{job.file_id}: segment at {offset}: {_why(answer)}")
        if tries[offset] >= self.settings.max_tries:
            raise TransferFailed(f"{job.file_id}: segment at {offset}: {_why(answer)}")
        logger.debug("resending %s segment %s: %s", job.file_id, offset, _why(answer))
        job.result.resends += 1
        todo.appendleft(offset)

    def _await_link(self, job: Job) -> None:
        deadline = time.monotonic() + self.settings.reconnect_wait_s
        logger.warning("connection lost while sending %s; waiting for it", job.file_id)
        while not self.transport.wait_connected(0.2):
            self._touch()
            if job.cancel.is_set():
                raise TransferInterrupted(f"{job.file_id}: cancelled")
            if time.monotonic() > deadline:
                raise TransferInterrupted(f"{job.file_id}: connection down too long")

    def _next_answer(self, job: Job, deadline: float) -> Answer | None:
        """The next answer for this job before `deadline`; raises if cancelled."""
        while True:
            self._touch()
            if job.cancel.is_set():
                raise TransferInterrupted(f"{job.file_id}: cancelled")
            wait = min(deadline - time.monotonic(), 0.25)
            if wait <= 0:
                return None
            try:
                return job.answers.get(timeout=wait)
            except queue.Empty:
                continue

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.ack_timeout_s
