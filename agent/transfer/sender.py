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
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from agent.durable import make_dirs
from agent.transfer import emqx
from agent.transfer import protocol as p
from agent.transfer.exchange import Exchange
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
from agent.transfer.segments import LINK_POLL_S, Job, Segments
from agent.transfer.signing import Signer
from agent.transfer.window import Window

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


class FileSender(Segments):
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
        self.active_at = time.monotonic()  # the last sign of life of any sending thread
        self._alive: dict[int, float] = {}  # ... of each sending thread (watchdog, per lane)
        self.window = Window()  # max_inflight holds for all sends together
        prune_done(self.state_dir)
        self._bucket = TokenBucket(
            settings.rate_limit_bytes_per_s,
            max(settings.rate_limit_bytes_per_s, settings.segment_bytes),
        )

    def alive_at(self, thread_id: int) -> float:
        """When the send on thread `thread_id` last showed life (0 when it never sent)."""
        return self._alive.get(thread_id, 0.0)

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
        job = Job(fd, file_id, meta, queue.Queue(), cancel or threading.Event())
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

    def _deliver(self, job: Job) -> SendResult:
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

    def _fin(self, job: Job) -> p.Response | None:
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

    def _receipted(self, job: Job, answer: p.Response, nonce: str) -> bool | None:
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

    def _ensure_link(self, job: Job) -> bool:
        """Wait for the link if it is down; True when it was."""
        if self.transport.wait_connected(0):
            return False
        self._await_link(job)
        return True

    def _load_state(self, job: Job) -> ResumeState:
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

    def _command(self, job: Job, topic: str, payload: bytes) -> None:
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
        self, job: Job, topic: str, payload: bytes, timeout: float, accept: Any = None
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
                got = self._next_answer(job, min(deadline, time.monotonic() + LINK_POLL_S))
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
