"""The dock's side of EMQX file transfer: pipelined segments, resend on failure, resumable.

SPEC 7 and 7.1: one init payload per transfer, fixed at its first attempt and persisted; a
silent fin is sent again alone before any segment is; EMQX's `enospc`/`edquot` mean no room;
signed (SPEC 11), a fin counts only with central's receipt over that fin's nonce.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from agent.durable import make_dirs
from agent.transfer import emqx
from agent.transfer import protocol as p
from agent.transfer.exchange import Answer, Exchange, poll
from agent.transfer.link import Transport
from agent.transfer.outcome import (
    QuotaExceeded,
    ReceiptInvalid,
    SendResult,
    SendSettings,
    TransferFailed,
    TransferInterrupted,
)
from agent.transfer.outcome import why as _why
from agent.transfer.ratelimit import TokenBucket
from agent.transfer.resume import ResumeState, prune_done
from agent.transfer.signing import Signer

logger = logging.getLogger(__name__)
__all__ = [
    "FileSender",
    "QuotaExceeded",
    "ReceiptInvalid",
    "SendResult",
    "SendSettings",
    "TransferFailed",
    "TransferInterrupted",
]

_LINK_POLL_S = 0.1  # how often a wait for one answer checks that the link is still up


@dataclass
class _Job:
    fd: int
    file_id: str
    meta: p.FileMeta
    answers: queue.Queue[Answer]
    cancel: threading.Event
    result: SendResult = field(default_factory=SendResult)


@dataclass
class _Slot:
    offset: int
    deadline: float
    failure: p.Response | None = None  # held until the deadline: a success may still come


class FileSender:
    """Sends files over a Transport; one instance per client id, `send` may run in several threads.

    `signer` (SPEC 11) signs every init and segment, puts a fresh nonce in every fin and
    makes a successful fin count only with central's receipt over it; `on_forged(file_id)` is
    told of each success answer without a valid receipt (the sender keeps listening).
    """

    def __init__(
        self,
        transport: Transport,
        client_id: str,
        state_dir: Path,
        settings: SendSettings,
        signer: Signer | None = None,
    ) -> None:
        self.transport = transport
        self.client_id = client_id
        self.state_dir = Path(state_dir)
        self.settings = settings
        self.signer = signer
        self.on_forged: Any = None
        self.exchange = Exchange(transport, client_id, settings.ack_mode)
        self._pruned_at = time.monotonic()
        self.active_at = time.monotonic()  # the sending thread's last sign of life (watchdog)
        prune_done(self.state_dir)
        self._bucket = TokenBucket(
            settings.rate_limit_bytes_per_s,
            max(settings.rate_limit_bytes_per_s, settings.segment_bytes),
        )

    def set_rate_limit(self, bytes_per_s: int) -> None:
        """A new upload rate limit (0 = unlimited), from the next segment on."""
        self.settings = replace(self.settings, rate_limit_bytes_per_s=bytes_per_s)
        self._bucket.set_rate(bytes_per_s, max(bytes_per_s, self.settings.segment_bytes))

    def send(
        self,
        path: Path,
        file_id: str,
        name: str,
        size: int,
        user_data: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> SendResult:
        """Deliver one file; returns once `fin` succeeded, else raises TransferFailed.

        `name` is sent as is when EMQX accepts it, else under a safe name (SendResult.name).
        The init payload of the first attempt is kept: later calls send that one, whatever
        `user_data` they bring, until the transfer is done.
        """
        p.check_file_id(file_id)
        meta = self._meta(emqx.safe_name(name), size, file_id, user_data)
        fd = os.open(path, os.O_RDONLY)
        job = _Job(fd, file_id, meta, queue.Queue(), cancel or threading.Event())
        job.result.name = meta.name
        try:
            return self._deliver(job)
        finally:
            os.close(fd)

    def _meta(self, name: str, size: int, file_id: str, user_data: dict[str, Any]) -> p.FileMeta:
        meta = p.FileMeta(
            name=name,
            size=size,
            checksum=file_id,
            expire_at=int(time.time()) + self.settings.expire_after_s,
            segments_ttl=self.settings.segments_ttl_s,
            user_data=dict(user_data),
        )
        return meta if self.signer is None else self.signer.sign_meta(file_id, meta)

    def _deliver(self, job: _Job) -> SendResult:
        state = self._load_state(job)
        if self.signer is not None and self.signer.stale_init(job.file_id, state.init):
            # Signed the old way (HMAC), or with an earlier key: the receiver would refuse it for
            # good. Sent afresh: a new init, every segment again (SPEC 11 migration).
            logger.warning("%s: saved init not signed by this key; sent afresh", job.file_id)
            state.init = None
            state.reset()
        init = state.fix_init(p.init_payload(job.meta))
        answer: p.Response | None = None
        for round_no in range(1, self.settings.max_rounds + 1):
            job.result.rounds = round_no
            self._command(job, p.init_topic(self.settings.prefix, job.file_id), init)
            todo = deque(o for o in self._offsets(job.meta.size) if o not in state.acked)
            job.result.skipped += len(self._offsets(job.meta.size)) - len(todo)
            try:
                self._send_segments(job, todo, state)
            except QuotaExceeded:
                state.reset()
                raise
            finally:
                state.save()
            answer = self._fin(job)
            if answer is not None and answer.ok:
                state.finish()
                self._prune()
                logger.info("sent %s (%s bytes): fin acknowledged", job.file_id, job.meta.size)
                return job.result
            if answer is None and job.result.forged:
                raise ReceiptInvalid(
                    f"{job.file_id}: fin answered {job.result.forged} time(s) with success but "
                    "no valid receipt, and never by the receiver"
                )
            state.reset()
            if p.no_room(answer):
                raise QuotaExceeded(f"{job.file_id}: fin refused: {_why(answer)}")
            logger.warning("fin of %s failed (%s); resending all", job.file_id, _why(answer))
        raise TransferFailed(
            f"{job.file_id}: fin failed after {self.settings.max_rounds} rounds: {_why(answer)}"
        )

    def _fin(self, job: _Job) -> p.Response | None:
        """Send `fin`; on silence the fin alone again (EMQX answers after assembly), sooner if lost."""
        topic = p.fin_topic(self.settings.prefix, job.file_id, job.meta.size, job.meta.checksum)
        full = timeout = self.settings.fin_timeout_s
        for _ in range(self.settings.max_tries):
            if self._ensure_link(job):
                timeout = self.settings.ack_timeout_s
            job.result.fins_sent += 1
            payload, nonce = self.signer.fin_payload() if self.signer else (b"", "")
            accept = partial(self._receipted, nonce=nonce)
            answer, dropped = self._request(job, topic, payload, timeout, accept)
            if answer is not None:
                return answer
            if not dropped and timeout >= full:
                logger.info(
                    "fin of %s unanswered after %.0f s; sending it again", job.file_id, timeout
                )
            # The receiver may still be reconnecting too: a fin sent before it resubscribed is lost.
            timeout = self.settings.ack_timeout_s if dropped else min(full, timeout * 2)
        return None

    def _receipted(self, job: _Job, answer: p.Response, nonce: str) -> bool | None:
        """Act on a fin answer (True), ignore a forged success (False), or hold a failure (None)."""
        verdict = (
            True
            if self.signer is None
            else self.signer.judge_fin(job.file_id, job.meta, nonce, answer)
        )
        if verdict is False:
            job.result.forged += 1
            if self.on_forged is not None:
                self.on_forged(job.file_id)
        return verdict

    def _prune(self) -> None:
        """Drop kept inits past their expire_at, at most hourly."""
        if time.monotonic() - self._pruned_at >= 3600:
            self._pruned_at = time.monotonic()
            prune_done(self.state_dir)

    def _ensure_link(self, job: _Job) -> bool:
        """Wait for the link if it is down; True when it was."""
        if self.transport.wait_connected(0):
            return False
        self._await_link(job)
        return True

    def _load_state(self, job: _Job) -> ResumeState:
        key = {
            "client_id": self.client_id,
            "file_id": job.file_id,
            "size": job.meta.size,
            "segment_bytes": self.settings.segment_bytes,
        }
        make_dirs(self.state_dir)
        return ResumeState.load(
            self.state_dir, key, self.settings.persist_interval_s, self.settings.segments_ttl_s
        )

    def _offsets(self, size: int) -> range:
        return range(0, size, self.settings.segment_bytes)

    def _command(self, job: _Job, topic: str, payload: bytes) -> None:
        """Send one command until it succeeds, at most `max_tries` times."""
        answer = None
        signer = self.signer
        judge = None if signer is None else lambda _job, a: signer.judge(a)
        for _ in range(self.settings.max_tries):
            self._ensure_link(job)
            answer, _ = self._request(job, topic, payload, self.settings.ack_timeout_s, judge)
            if answer is not None and answer.ok:
                return
            if p.no_room(answer):
                raise QuotaExceeded(f"{topic}: {_why(answer)}")
        raise TransferFailed(f"{topic}: {_why(answer)} after {self.settings.max_tries} tries")

    def _request(
        self, job: _Job, topic: str, payload: bytes, timeout: float, accept: Any = None
    ) -> tuple[p.Response | None, bool]:
        """One command, one answer: (answer or None on silence, whether the link dropped meanwhile).

        Answers `accept(job, answer)` rejects (False) are skipped; one it holds (None: a failure any
        broker client could have sent) is returned only if no accepted one follows within
        ack_timeout_s, unless central signed it as its refusal of this very command. A command
        published just before the broker went away is lost with it: waiting out the whole
        timeout after the link is back would only delay the resend.
        """
        corr = self.exchange.publish(job.answers, topic, payload)
        deadline, held = time.monotonic() + timeout, None
        try:
            while self.transport.wait_connected(0):
                got = self._next_answer(job, min(deadline, time.monotonic() + _LINK_POLL_S))
                if got is not None and got[0] == corr:
                    verdict = True if accept is None else accept(job, got[1])
                    if verdict is None and self.signer and self.signer.refused(topic, payload, got):
                        verdict = True
                    if verdict:
                        return got[1], False
                    if verdict is None and held is None:
                        held, deadline = got[1], min(deadline, self._deadline())
                elif got is None and time.monotonic() >= deadline:
                    return held, False
            return held, True
        finally:
            self.exchange.forget(corr)

    def _send_segments(self, job: _Job, todo: deque[int], state: ResumeState) -> None:
        """Keep up to `max_inflight` segments unanswered until every one is acknowledged."""
        inflight: dict[bytes, _Slot] = {}
        tries: dict[int, int] = {}
        while todo or inflight:
            if todo and len(inflight) < self.settings.max_inflight:
                offset = todo.popleft()
                inflight[self._send_segment(job, offset)] = _Slot(offset, self._deadline())
                got = poll(job.answers)
            else:
                got = self._next_answer(job, min(s.deadline for s in inflight.values()))
                if got is None:
                    self._expire(job, inflight, todo, tries)
            if got is not None:
                self._settle(job, got, inflight, todo, tries, state)

    def _settle(
        self,
        job: _Job,
        got: Answer,
        inflight: dict[bytes, _Slot],
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
        self.exchange.forget(got[0])
        if got[1].ok:
            state.ack(slot.offset)
        else:
            self._retry(job, slot.offset, got[1], todo, tries)

    def _holds(self, job: _Job, offset: int, got: Answer) -> bool:
        """Whether a segment's failure waits for a proved success: not one central signed."""
        if self.signer is None or not self.signer.holds_failures:
            return False
        size = min(self.settings.segment_bytes, job.meta.size - offset)
        read = partial(os.pread, job.fd, size, offset)  # only for a failure that has a receipt
        return not self.signer.segment_refused(self.settings.prefix, job.file_id, offset, read, got)

    def _send_segment(self, job: _Job, offset: int) -> bytes:
        length = min(self.settings.segment_bytes, job.meta.size - offset)
        data = os.pread(job.fd, length, offset)
        self.active_at = time.monotonic()
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
        self, job: _Job, inflight: dict[bytes, _Slot], todo: deque[int], tries: dict[int, int]
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
                self.exchange.forget(corr)
                self._retry(job, slot.offset, slot.failure, todo, tries)

    def _retry(
        self,
        job: _Job,
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

    def _await_link(self, job: _Job) -> None:
        deadline = time.monotonic() + self.settings.reconnect_wait_s
        logger.warning("connection lost while sending %s; waiting for it", job.file_id)
        while not self.transport.wait_connected(0.2):
            self.active_at = time.monotonic()
            if job.cancel.is_set():
                raise TransferInterrupted(f"{job.file_id}: cancelled")
            if time.monotonic() > deadline:
                raise TransferInterrupted(f"{job.file_id}: connection down too long")

    def _next_answer(self, job: _Job, deadline: float) -> Answer | None:
        """The next answer for this job before `deadline`; raises if cancelled."""
        while True:
            self.active_at = time.monotonic()
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
