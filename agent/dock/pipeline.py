"""The offload pipeline: group N is copied while N-1 is proved and N-2 placed and recorded."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent.evidence.store import EvidenceStore, Staged, StoredCopy
from firmware_interface.base import ClipEntry

R = TypeVar("R")
Group = list[tuple[ClipEntry, Staged]]


class Halted(Exception):
    """A group not committed because one before it failed, or the offload stopped."""


@dataclass
class _InFlight(Generic[R]):
    seq: int
    staged: Group
    recording: Future[R]


class Pipeline(Generic[R]):
    """Proves staged groups in one helper thread, places and records them in another.

    Both run one group at a time, in the order submitted, so a group is placed only after its
    own proof and recorded in order. Once a group fails, no later group is placed.
    """

    def __init__(
        self,
        name: str,
        store: EvidenceStore,
        record: Callable[[Group, list[StoredCopy]], R],
        depth: int = 2,
    ) -> None:
        self._store = store
        self._record = record
        self.depth = depth  # groups in flight while the next one is copied
        self._prover = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-prove")
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-record")
        self._pending: deque[_InFlight[R]] = deque()
        self._seq = itertools.count()
        self._halted_at: float = math.inf  # no group after this one is placed

    def __enter__(self) -> Pipeline[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
        self._prover.shutdown()
        self._recorder.shutdown()

    def submit(self, staged: Group) -> None:
        """Queue a staged group: proved, then placed and recorded, behind the ones before."""
        seq = next(self._seq)
        proving = self._prover.submit(self._prove, seq, staged)
        recording = self._recorder.submit(self._commit, seq, staged, proving)
        self._pending.append(_InFlight(seq, staged, recording))

    def full(self) -> bool:
        """Whether the oldest group must be finished before another is copied."""
        return len(self._pending) > self.depth

    def busy(self) -> bool:
        """Whether a group is still in flight."""
        return bool(self._pending)

    def next_done(self) -> tuple[Group, R]:
        """Wait for the oldest group: (its clips, what recording it returned); its failure raised."""
        group = self._pending.popleft()
        try:
            return group.staged, group.recording.result()
        except BaseException:
            self._store.discard([item for _, item in group.staged])
            raise

    def drop(self) -> None:
        """Stop every group in flight (one being placed finishes), remove their temp files."""
        if not self._pending:
            return
        self._halt(self._pending[0].seq - 1)
        wait([group.recording for group in self._pending])
        for group in self._pending:
            self._store.discard([item for _, item in group.staged])
        self._pending.clear()

    def _prove(self, seq: int, staged: Group) -> None:
        items = [item for _, item in staged]
        try:
            self._check(seq)
            try:
                self._store.prove(items)
            except BaseException:
                self._store.discard(items)
                raise
        except BaseException:
            self._halt(seq)
            raise

    def _commit(self, seq: int, staged: Group, proving: Future[None]) -> R:
        try:
            proving.result()  # a failed proof is this group's failure
            self._check(seq)
            copies = self._store.place([item for _, item in staged])
            return self._record(staged, copies)
        except BaseException:
            self._halt(seq)
            raise

    def _check(self, seq: int) -> None:
        if seq > self._halted_at:
            raise Halted("an earlier group failed or the offload stopped")

    def _halt(self, seq: float) -> None:
        self._halted_at = min(self._halted_at, seq)
