"""The dock's side of EMQX file transfer: pipelined segments, resend on failure, resumable."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttSection
from agent.transfer import protocol as p
from agent.transfer.link import Transport
from agent.transfer.ratelimit import TokenBucket
from agent.transfer.resume import ResumeState

logger = logging.getLogger(__name__)

Answer = tuple[bytes, p.Response]
_LINK_POLL_S = 0.1  # how often a wait for one answer checks that the link is still up


class TransferFailed(Exception):
    """The file could not be delivered within the bounded retries."""


class TransferInterrupted(TransferFailed):
    """Stopped early (cancelled, or the connection stayed down); a later send resumes."""


class QuotaExceeded(TransferFailed):
    """The receiver has no room for the file (QUOTA_EXCEEDED): resending now would be pointless.

    It may have dropped segments it had acknowledged, so a later send resends all of them.
    """


@dataclass(frozen=True)
class SendSettings:
    """Tuning of one sender; the first four come from `[mqtt]`."""

    prefix: str = "$file"
    segment_bytes: int = 262144
    max_inflight: int = 32
    rate_limit_bytes_per_s: int = 0
    ack_timeout_s: float = 10.0
    fin_timeout_s: float = 120.0
    max_tries: int = 5
    max_rounds: int = 3
    reconnect_wait_s: float = 60.0
    persist_interval_s: float = 1.0
    expire_after_s: int = 30 * 86400
    segments_ttl_s: int = 7 * 86400

    @classmethod
    def from_mqtt(cls, cfg: MqttSection, **overrides: Any) -> SendSettings:
        """Settings from the dock's `[mqtt]` table."""
        return cls(
            prefix=cfg.file_transfer_prefix,
            segment_bytes=cfg.segment_bytes,
            max_inflight=cfg.max_inflight,
            rate_limit_bytes_per_s=cfg.rate_limit_bytes_per_s,
            **overrides,
        )


@dataclass
class SendResult:
    """What one `send` took: segment publishes (resends included), rounds, resends."""

    segments_sent: int = 0
    bytes_sent: int = 0
    resends: int = 0
    rounds: int = 0
    skipped: int = 0


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


class FileSender:
    """Sends files over a Transport; one instance per client id, `send` may run in several threads."""

    def __init__(
        self, transport: Transport, client_id: str, state_dir: Path, settings: SendSettings
    ) -> None:
        self.transport = transport
        self.client_id = client_id
        self.state_dir = Path(state_dir)
        self.settings = settings
        self.reply_topic = p.response_topic(client_id)
        self._waiters: dict[bytes, queue.Queue[Answer]] = {}
        self._lock = threading.Lock()
        self._bucket = TokenBucket(
            settings.rate_limit_bytes_per_s,
            max(settings.rate_limit_bytes_per_s, settings.segment_bytes),
        )
        transport.subscribe(self.reply_topic, 1, self._on_response)

    def send(
        self,
        path: Path,
        file_id: str,
        name: str,
        size: int,
        manifest: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> SendResult:
        """Deliver one file; returns once `fin` succeeded, else raises TransferFailed."""
        p.check_file_id(file_id)
        p.check_name(name)
        meta = self._meta(name, size, file_id, manifest)
        fd = os.open(path, os.O_RDONLY)
        job = _Job(fd, file_id, meta, queue.Queue(), cancel or threading.Event())
        try:
            return self._deliver(job)
        finally:
            os.close(fd)

    def _meta(self, name: str, size: int, file_id: str, manifest: dict[str, Any]) -> p.FileMeta:
        now = int(time.time())
        return p.FileMeta(
            name=name,
            size=size,
            checksum=file_id,
            expire_at=now + self.settings.expire_after_s,
            segments_ttl=self.settings.segments_ttl_s,
            user_data=manifest,
        )

    def _deliver(self, job: _Job) -> SendResult:
        state = self._load_state(job)
        answer: p.Response | None = None
        for round_no in range(1, self.settings.max_rounds + 1):
            job.result.rounds = round_no
            self._command(
                job, p.init_topic(self.settings.prefix, job.file_id), p.init_payload(job.meta)
            )
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
                state.discard()
                logger.info("sent %s (%s bytes): fin acknowledged", job.file_id, job.meta.size)
                return job.result
            state.reset()
            if _no_room(answer):
                raise QuotaExceeded(f"{job.file_id}: fin refused: {_why(answer)}")
            logger.warning("fin of %s failed (%s); resending all", job.file_id, _why(answer))
        raise TransferFailed(
            f"{job.file_id}: fin failed after {self.settings.max_rounds} rounds: {_why(answer)}"
        )

    def _fin(self, job: _Job) -> p.Response | None:
        """Send `fin`; one the link lost is sent again soon, backing off, rather than failed."""
        topic = p.fin_topic(self.settings.prefix, job.file_id, job.meta.size, job.meta.checksum)
        full = timeout = self.settings.fin_timeout_s
        for _ in range(self.settings.max_tries):
            if self._ensure_link(job):
                timeout = self.settings.ack_timeout_s
            answer, dropped = self._request(job, topic, b"", timeout)
            if answer is not None or (timeout >= full and not dropped):
                return answer
            # The receiver may still be reconnecting too: a fin sent before it resubscribed is lost.
            timeout = self.settings.ack_timeout_s if dropped else min(full, timeout * 2)
        return None

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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return ResumeState.load(self.state_dir, key, self.settings.persist_interval_s)

    def _offsets(self, size: int) -> range:
        return range(0, size, self.settings.segment_bytes)

    def _command(self, job: _Job, topic: str, payload: bytes) -> None:
        """Send one command until it succeeds, at most `max_tries` times."""
        answer: p.Response | None = None
        for _ in range(self.settings.max_tries):
            self._ensure_link(job)
            answer, _dropped = self._request(job, topic, payload, self.settings.ack_timeout_s)
            if answer is not None and answer.ok:
                return
            if _no_room(answer):
                raise QuotaExceeded(f"{topic}: {_why(answer)}")
        raise TransferFailed(f"{topic}: {_why(answer)} after {self.settings.max_tries} tries")

    def _request(
        self, job: _Job, topic: str, payload: bytes, timeout: float
    ) -> tuple[p.Response | None, bool]:
        """One command, one answer: (answer or None on silence, whether the link dropped meanwhile).

        A command published just before the broker went away is lost with it: waiting out the
        whole timeout after the link is back would only delay the resend.
        """
        corr = self._publish(job, topic, payload)
        deadline = time.monotonic() + timeout
        try:
            while self.transport.wait_connected(0):
                got = self._next_answer(job, min(deadline, time.monotonic() + _LINK_POLL_S))
                if got is not None and got[0] == corr:
                    return got[1], False
                if got is None and time.monotonic() >= deadline:
                    return None, False
            return None, True
        finally:
            self._forget(corr)

    def _send_segments(self, job: _Job, todo: deque[int], state: ResumeState) -> None:
        """Keep up to `max_inflight` segments unanswered until every one is acknowledged."""
        inflight: dict[bytes, _Slot] = {}
        tries: dict[int, int] = {}
        while todo or inflight:
            if todo and len(inflight) < self.settings.max_inflight:
                offset = todo.popleft()
                inflight[self._send_segment(job, offset)] = _Slot(offset, self._deadline())
                got = _poll(job.answers)
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
        slot = inflight.pop(got[0], None)
        if slot is None:
            return
        self._forget(got[0])
        if got[1].ok:
            state.ack(slot.offset)
        else:
            self._retry(job, slot.offset, got[1], todo, tries)

    def _send_segment(self, job: _Job, offset: int) -> bytes:
        length = min(self.settings.segment_bytes, job.meta.size - offset)
        data = os.pread(job.fd, length, offset)
        if not self._bucket.take(len(data), job.cancel):
            raise TransferInterrupted(f"{job.file_id}: cancelled")
        topic = p.segment_topic(self.settings.prefix, job.file_id, offset, p.sha256_hex(data))
        job.result.segments_sent += 1
        job.result.bytes_sent += len(data)
        return self._publish(job, topic, data)

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
                self._forget(corr)
                self._retry(job, slot.offset, None, todo, tries)

    def _retry(
        self,
        job: _Job,
        offset: int,
        answer: p.Response | None,
        todo: deque[int],
        tries: dict[int, int],
    ) -> None:
        tries[offset] = tries.get(offset, 0) + 1
        if _no_room(answer):
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
            if job.cancel.is_set():
                raise TransferInterrupted(f"{job.file_id}: cancelled")
            if time.monotonic() > deadline:
                raise TransferInterrupted(f"{job.file_id}: connection down too long")

    def _next_answer(self, job: _Job, deadline: float) -> Answer | None:
        """The next answer for this job before `deadline`; raises if cancelled."""
        while True:
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

    def _publish(self, job: _Job, topic: str, payload: bytes) -> bytes:
        corr = uuid.uuid4().bytes
        with self._lock:
            self._waiters[corr] = job.answers
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        try:
            self.transport.publish(topic, payload, 1, props)
        except Exception as exc:  # silence is then handled by the answer timeout
            logger.warning("publish to %s failed: %s", topic, exc)
        return corr

    def _forget(self, corr: bytes) -> None:
        with self._lock:
            self._waiters.pop(corr, None)

    def _on_response(self, msg: mqtt.MQTTMessage) -> None:
        """Route one answer to the send waiting for it (runs on the network thread)."""
        corr = getattr(getattr(msg, "properties", None), "CorrelationData", None)
        with self._lock:
            target = self._waiters.get(corr) if isinstance(corr, bytes) else None
        if target is None:
            return
        try:
            target.put((corr, p.parse_response(bytes(msg.payload))))  # type: ignore[arg-type]
        except p.ProtocolError as exc:
            logger.warning("unreadable file-transfer response: %s", exc.description)


def _poll(answers: queue.Queue[Answer]) -> Answer | None:
    try:
        return answers.get_nowait()
    except queue.Empty:
        return None


def _no_room(answer: p.Response | None) -> bool:
    """True on QUOTA_EXCEEDED: no room at the receiver (or beyond the size: resending is futile)."""
    return answer is not None and answer.reason_code == p.QUOTA_EXCEEDED


def _why(answer: p.Response | None) -> str:
    if answer is None:
        return "no answer in time"
    return f"reason code {answer.reason_code}: {answer.reason_description}"
