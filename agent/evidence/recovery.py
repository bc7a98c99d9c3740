"""Start-up recovery: what custody recorded but the index lost (a power cut between the two).

The custody log is the record of what happened. Each step that changes a clip appends its
custody entry first and updates the index after (sync, recorder deletion, purge, hold), so
a power cut between the two leaves the index behind. At start-up the entries appended
since the last time the index was known to agree (a mark kept in `state/`) are replayed
against the index: what the index lacks is applied, marked `recovered`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.durable import fsync_dir, write_json
from agent.events import ClipFlow, ClipStep, Freed, Purged, Synced
from agent.evidence import lifecycle
from agent.evidence.index import ClipIndex

logger = logging.getLogger(__name__)

MARK = Path("state") / "custody_applied.json"
Record = dict[str, Any]


@dataclass
class Repair:
    """What one clip's index row lacks of what custody recorded."""

    clip_id: str
    changes: dict[str, Any] = field(default_factory=dict)
    unlink: str | None = None  # a purge custody recorded whose file may still be here
    seqs: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the custody events that were missing


def _clip_of(entry: Mapping[str, Any]) -> str:
    return str(entry.get("clip") or entry.get("sha256") or "")


def _after(row: Record, entry: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The row changes custody `entry` implies that `row` does not show yet (pure)."""
    event, rank = entry.get("event"), lifecycle.rank(row)
    if event in ("recorder_clip_deleted", "recorder_clip_missing"):
        return ({} if lifecycle.recorder_handled(row) else lifecycle.freed()), None
    if event == "clip_synced" and rank < 1:
        proven = entry.get("ack") != "unproven"
        return lifecycle.synced(entry.get("synced_at") or entry.get("ts"), proven), None
    if event == "clip_ack_proven" and not lifecycle.proven(row):
        return lifecycle.ack_proven(), None
    if event == "local_copy_purged" and rank < 2:
        changes = lifecycle.purged(entry.get("ts"), entry.get("reason"), entry.get("seq"))
        return changes, str(entry.get("local_path") or row.get("local_path") or "") or None
    if event == "hold":
        held = not entry.get("release")
        if bool(row.get("held")) != held:
            return {"held": held, "hold_reason": entry.get("reason") if held else None}, None
    return {}, None


def repairs(
    entries: Iterable[Mapping[str, Any]], get: Callable[[str], Record | None]
) -> list[Repair]:
    """Per clip, what custody `entries` recorded that the index (`get`) does not show."""
    rows: dict[str, Record | None] = {}
    found: dict[str, Repair] = {}
    for entry in entries:
        clip = _clip_of(entry)
        if not clip or entry.get("event") not in _EVENTS:
            continue
        if clip not in rows:
            rows[clip] = get(clip)
        row = rows[clip]
        if row is None:
            continue  # a clip the index never held cannot be repaired here (verify says so)
        changes, unlink = _after(row, entry)
        if changes:
            row.update(changes)
            repair = found.setdefault(clip, Repair(clip))
            repair.changes.update(changes)
            repair.unlink = unlink or repair.unlink
            repair.seqs.append(int(entry.get("seq") or 0))
            repair.events.append(str(entry.get("event")))
    return list(found.values())


_EVENTS = frozenset(
    {
        "recorder_clip_deleted",
        "recorder_clip_missing",
        "clip_synced",
        "clip_ack_proven",
        "local_copy_purged",
        "hold",
    }
)


def entries_from(path: Path, offset: int) -> Iterator[tuple[dict[str, Any], int]]:
    """(entry, offset after it) for each complete line of a custody log from `offset`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        for raw in fh:
            if not raw.endswith(b"\n"):
                return  # a torn tail: never acknowledged
            offset += len(raw)
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry, offset


class IndexRecovery:
    """Replays the custody log's tail against the index at start-up (in the background)."""

    def __init__(
        self,
        index: ClipIndex,
        custody_path: Path,
        data_dir: Path,
        policy: str,
        flow: ClipFlow | None = None,
    ) -> None:
        """`flow`: where each repaired step is published, as the stage that lost it would have."""
        self.index = index
        self.flow = flow
        self.custody_path = custody_path
        self.mark_path = Path(data_dir) / MARK
        self.policy = policy
        self.applied: list[Repair] | None = None  # set when the pass finished
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-recovery", daemon=True)

    def start(self) -> None:
        """Start the pass; start-up does not wait for it."""
        self._thread.start()

    def stop(self) -> None:
        """Wait for a running pass; after a clean stop the index agrees with custody."""
        if self._thread.is_alive():
            self._thread.join(30)
        if self.done.is_set():
            self._mark(self._size())

    def run(self) -> list[Repair]:
        """One pass: replay, apply, move the mark to the end of what was read."""
        offset = self._marked()
        read = list(entries_from(self.custody_path, offset)) if self.custody_path.exists() else []
        end = read[-1][1] if read else offset
        found = repairs([entry for entry, _ in read], self.index.get)
        for repair in found:
            self._apply(repair)
        self._mark(end)
        return found

    def _run(self) -> None:
        try:
            self.applied = self.run()
        except Exception:  # recovery must never stop the dock; verify still reports
            logger.exception("index recovery from the custody log failed")
        finally:
            self.done.set()

    def _apply(self, repair: Repair) -> None:
        updated = lifecycle.advance(
            self.index, repair.clip_id, self.policy, **repair.changes, recovered=True
        )
        if repair.unlink:
            _unlink(repair.unlink)
        logger.warning(
            "clip %s: the index lacked what custody seq %s recorded (%s); applied as recovered",
            repair.clip_id[:12],
            ", ".join(map(str, repair.seqs)),
            ", ".join(sorted(repair.changes)),
            extra={"CLIP_SHA256": repair.clip_id},
        )
        if self.flow is not None:
            for step in _steps(repair, str(updated.get("device_id") or "")):
                self.flow.publish(step)

    def _marked(self) -> int:
        """Where the last pass (or clean stop) left off; 0 when unknown or past the end."""
        try:
            mark = json.loads(self.mark_path.read_text(encoding="utf-8"))
            offset = int(mark["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        return offset if 0 <= offset <= self._size() else 0

    def _size(self) -> int:
        try:
            return self.custody_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _mark(self, offset: int) -> None:
        write_json(self.mark_path, {"offset": offset})


def _steps(repair: Repair, device_id: str) -> list[ClipStep]:
    """The clip steps a repair completes (the next stages learn of them as of any other)."""
    clip = repair.clip_id
    made: dict[str, ClipStep] = {
        "clip_synced": Synced(clip, device_id),
        "clip_ack_proven": Synced(clip, device_id),
        "recorder_clip_deleted": Freed(clip, device_id),
        "recorder_clip_missing": Freed(clip, device_id),
        "local_copy_purged": Purged(clip),
    }
    return list(dict.fromkeys(made[e] for e in repair.events if e in made))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(Path(path).parent)
