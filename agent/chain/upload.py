"""The dock's side of the chain at central (SPEC 8.1): chunks sent in order, what central holds.

`ChainUpload.ensure(seq)` sends chunks until central holds the chain up to `seq` (the sync
worker calls it with a clip's `custody_seq` before it sends the clip, so a clip is never
acked before central holds its `clip_offloaded` entry); `flush()` sends whatever is new (at
the end of a docking and every `custody_sync_s`). What central acknowledged (its seq, the
byte offset after it, the chain id) is kept in `{data_dir}/transfer/custody_sync.json`;
a new chain (a wiped data_dir) starts from seq 1.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import durable
from agent.chain.check import FORK
from agent.chain.chunk import Chunk, build_chunk, read_chain_id
from agent.evidence.custody import read_cut

logger = logging.getLogger(__name__)

STATE = "custody_sync.json"


class SendFile(Protocol):
    """FileSender.send: deliver one file, return once its fin succeeded, else raise."""

    def __call__(
        self,
        path: Path,
        file_id: str,
        name: str,
        size: int,
        user_data: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> Any: ...


class ChainUpload:
    """Sends the custody log upstream in chunks, in order, remembering what central holds."""

    def __init__(
        self, log: Path, dock_id: str, key: Ed25519PrivateKey, work_dir: Path, send: SendFile
    ) -> None:
        self.log = Path(log)
        self.dock_id = dock_id
        self.key = key
        self.dir = Path(work_dir)
        self.send = send
        self._state = self._load()
        for stale in self.dir.glob("custody-*.jsonl"):  # a chunk a kill left: rebuilt when sent
            stale.unlink(missing_ok=True)
        self._probed = False  # a fork's seq was looked for (once a process)

    @property
    def held_seq(self) -> int:
        """The last seq central acknowledged of the current chain."""
        return int(self._state["held_seq"])

    def pending(self) -> bool:
        """Whether the log holds entries central does not."""
        return read_cut(self.log).seq > self.held_seq_of_current()

    def held_seq_of_current(self) -> int:
        """held_seq, or 0 when the log is another chain than the one acknowledged."""
        chain = read_chain_id(self.log)
        return self.held_seq if chain == self._state["chain_id"] else 0

    def ensure(self, seq: int, cancel: threading.Event | None = None) -> None:
        """Send chunks until central holds seq `seq`; TransferFailed (from send) if it cannot."""
        while self.held_seq_of_current() < seq:
            if not self._send_next(cancel):
                raise LookupError(f"custody seq {seq} is not in the log yet")

    def flush(self, cancel: threading.Event | None = None) -> int:
        """Send every entry central lacks; how many chunks were sent."""
        sent = 0
        while self._send_next(cancel):
            sent += 1
        return sent

    def _send_next(self, cancel: threading.Event | None) -> bool:
        """Send the next chunk; False when there is nothing new.

        When central refuses it as a fork, the log central already holds is sent once more
        from seq 1 (what matches is accepted as it stands), so central keeps the chunk that
        holds the first entry that differs and names its seq; then the refusal is raised.
        """
        try:
            return self._send_from(self.held_seq + 1, cancel)
        except Exception as exc:
            if FORK not in str(exc) or self._probed:
                raise
            self._probed = True
            logger.error(
                "custody: central refused seqs from %d as a fork: %s", self.held_seq + 1, exc
            )
            self._probe(cancel)
            raise

    def _probe(self, cancel: threading.Event | None) -> None:
        """Send the entries central holds again, chunk by chunk, until one is refused."""
        first = 1
        while first <= self.held_seq:
            chunk = self._chunk(first, 0)
            if chunk is None or chunk.first_seq > self.held_seq:
                return
            try:
                self._deliver(chunk, cancel)
            except Exception as exc:
                if FORK in str(exc):
                    return  # central kept it: the seq that differs is named there
                raise
            first = chunk.last_seq + 1

    def _chunk(self, first: int, start: int) -> Chunk | None:
        cut = read_cut(self.log)
        return build_chunk(self.log, self.dock_id, self.key, first, start=start, limit=cut.size)

    def _deliver(self, chunk: Chunk, cancel: threading.Event | None) -> None:
        """Send one chunk as a file (written under work_dir for the sender, removed after)."""
        path = self.dir / chunk.name
        durable.make_dirs(self.dir)
        durable.write_bytes(path, chunk.data)
        try:
            self.send(path, chunk.file_id, chunk.name, len(chunk.data), chunk.user_data, cancel)
        finally:
            path.unlink(missing_ok=True)

    def _send_from(self, first: int, cancel: threading.Event | None) -> bool:
        """Send the chunk from `first` (from 1 for a chain central has not acknowledged)."""
        chain = read_chain_id(self.log)
        if chain is None:
            return False
        if chain != self._state["chain_id"]:
            known = self._state["chain_id"]
            level = logging.INFO if known is None else logging.WARNING  # replaced under us
            logger.log(level, "custody chain %s: sent to central from seq 1 (was %s)", chain, known)
            self._state = {"chain_id": chain, "held_seq": 0, "offset": 0}
            first = 1
        chunk = self._chunk(first, int(self._state["offset"]))
        if chunk is None:
            return False
        self._deliver(chunk, cancel)
        self._state = {"chain_id": chain, "held_seq": chunk.last_seq, "offset": chunk.end_offset}
        durable.write_json(self.dir / STATE, self._state)
        logger.info("custody seqs %d-%d held by central", chunk.first_seq, chunk.last_seq)
        return True

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.dir / STATE).read_bytes())
            return {
                "chain_id": str(doc["chain_id"]),
                "held_seq": int(doc["held_seq"]),
                "offset": int(doc["offset"]),
            }
        except (OSError, ValueError, KeyError, TypeError):
            return {"chain_id": None, "held_seq": 0, "offset": 0}
