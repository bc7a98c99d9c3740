"""One clip's delivery (SPEC 7.1, 8.1): the chain to its entry, then the clip and its manifest.

The chain goes first: central must never hold a clip, or a manifest naming notes, that its
copy of the chain does not reach yet (`dock-agent receive verify` would call it a mismatch).
The clip and its manifest file then go at once, the manifest on a thread of its own: they are
independent transfers, and a manifest sent after the clip's fin would leave the link idle
for its three round trips at the end of every docking (measured on the docking's mix over
40 Mbit/s and 40 ms: 0.26 s of a 10.6 s run). The clip is acked only when all three are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.chain.pacer import ChainPacer
from agent.sync.parcel import Parcel, Parcels, manifest_name, manifest_user_data
from agent.transfer.outcome import SendResult
from agent.transfer.sender import FileSender

WAIT_SLICE_S = 0.25  # how often the lane shows life while its manifest is still going


class _Side:
    """A manifest's send on its own thread; `result()` waits for it (and raises its error)."""

    def __init__(self, send: Callable[[], SendResult], name: str) -> None:
        self._send = send
        self._result: SendResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._send()
        except BaseException as exc:  # handed to the lane, which raises it
            self._error = exc

    def result(self, alive: Callable[[], None]) -> SendResult:
        while self._thread.is_alive():
            alive()
            self._thread.join(WAIT_SLICE_S)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class Delivery:
    """Delivers clips through one FileSender; `in_lane(record or None)` marks the thread that
    sends on a lane's behalf (the sync worker names the clip in its alerts by it)."""

    sender: FileSender
    pacer: ChainPacer
    parcels: Parcels
    dock_id: str
    build_manifest: Callable[[dict[str, Any]], dict[str, Any]]
    in_lane: Callable[[dict[str, Any] | None], None] = lambda record: None

    def __call__(
        self,
        record: dict[str, Any],
        cancel: threading.Event | None = None,
        alive: Callable[[], None] = lambda: None,
    ) -> list[SendResult]:
        """The chain to the clip's entry, then the clip and its manifest: acked when all are."""
        clip_id = record["clip_id"]
        self.pacer.before_clip(record, cancel, alive)
        parcel = self.parcels.prepare(clip_id, lambda: self.build_manifest(record))
        side = _Side(
            lambda: self._manifest(record, parcel, cancel),
            f"{threading.current_thread().name}-manifest",
        )
        results = []
        try:
            if not parcel.clip_acked:
                results.append(
                    self.sender.send(
                        Path(record["local_path"]),
                        clip_id,
                        record["file_name"],
                        record["size"],
                        parcel.user_data,
                        cancel,
                    )
                )
                self.parcels.clip_acked(clip_id)
        except BaseException:
            _quietly(side, alive)  # never leave a send behind; the clip's error is the one told
            raise
        results.append(side.result(alive))
        self.parcels.done(clip_id)
        return results

    def _manifest(
        self, record: dict[str, Any], parcel: Parcel, cancel: threading.Event | None
    ) -> SendResult:
        self.in_lane(record)
        try:
            return self.sender.send(
                parcel.manifest_path,
                parcel.manifest_sha256,
                manifest_name(record["file_name"]),
                parcel.manifest_size,
                manifest_user_data(self.dock_id, record["clip_id"]),
                cancel,
            )
        finally:
            self.in_lane(None)


def _quietly(side: _Side, alive: Callable[[], None]) -> None:
    """Wait for the manifest's send, whatever it ends in."""
    try:
        side.result(alive)
    except Exception:  # the clip failed first; the manifest goes again with the clip's retry
        return
