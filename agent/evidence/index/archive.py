"""The archive: finished clips in append-only shards, one per first two hex digits of the id."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.durable import TORN_CUT, AppendLog

logger = logging.getLogger(__name__)

Record = dict[str, Any]


def shard_name(clip_id: str) -> str:
    """The archive shard file name of a clip: the first two hex digits of its id."""
    return f"{clip_id[:2].lower()}.jsonl"


def complete_records(data: bytes) -> Iterator[Record]:
    """Records of a shard's complete lines; a torn last line (no newline) is ignored."""
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            logger.warning("archive shard: unreadable line skipped")
            continue
        if isinstance(record, dict) and "clip_id" in record:
            yield record


def latest_in(data: bytes, clip_id: str) -> Record | None:
    """The last complete version of `clip_id` in a shard's bytes, scanning from the end."""
    key = f'"clip_id":{json.dumps(clip_id)}'.encode()
    stop = data.rfind(b"\n") + 1  # bytes after the last newline are a torn append
    while (hit := data.rfind(key, 0, stop)) >= 0:
        begin = data.rfind(b"\n", 0, hit) + 1
        end = data.find(b"\n", hit)
        try:
            record = json.loads(data[begin:end])
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("clip_id") == clip_id:
            return record
        stop = begin
    return None


def append_shard(path: Path, lines: bytes) -> None:
    """Append whole lines to a shard durably, first cutting off any torn last line."""
    log = AppendLog(path, torn=TORN_CUT)
    try:
        log.append(lines)
    finally:
        log.close()


def line_clip_id(line: bytes) -> str | None:
    """The clip id of one archive line, found without parsing the record (None: unreadable)."""
    key = b'"clip_id":"'
    at = line.find(key)
    close = line.find(b'"', at + len(key))
    if at >= 0 and close > 0 and line.count(key) == 1:
        return line[at + len(key) : close].decode("utf-8", "replace")
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return str(record["clip_id"]) if isinstance(record, dict) and "clip_id" in record else None


class ArchiveFollower:
    """Reads the archive shards incrementally, as (clip_id, JSON line) pairs, records unparsed."""

    def __init__(self, archive_dir: Path, block: int = 1 << 20) -> None:
        """Follow the shards in `archive_dir`; appended lines are read `block` bytes at a time."""
        self.archive_dir = archive_dir
        self.block = block
        self._offsets: dict[str, int] = {}  # shard name -> bytes consumed (whole lines only)

    def poll(self, stop: threading.Event | None = None) -> Iterator[tuple[str, bytes]]:
        """Per shard: first the latest version of each clip, later only lines appended since."""
        for shard in sorted(self.archive_dir.glob("*.jsonl")):
            if stop is not None and stop.is_set():
                return
            if shard.name in self._offsets:
                yield from self._tail(shard)
            else:
                yield from self._first(shard)

    def _first(self, shard: Path) -> Iterator[tuple[str, bytes]]:
        """One shard read whole (1/256 of the history), newest line first, each clip once."""
        data = shard.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn append
        seen: set[str] = set()
        for line in reversed(data[:end].splitlines()):
            clip_id = line_clip_id(line)
            if clip_id is not None and clip_id not in seen:
                seen.add(clip_id)
                yield clip_id, line
        self._offsets[shard.name] = end

    def _tail(self, shard: Path) -> Iterator[tuple[str, bytes]]:
        """The complete lines appended to a shard since the last look, in order."""
        offset = self._offsets[shard.name]
        size = shard.stat().st_size
        if size == offset:
            return
        if size < offset:
            offset = 0  # replaced by hand (the agent only appends): read it all again
        with open(shard, "rb") as fh:
            fh.seek(offset)
            rest = b""
            while chunk := fh.read(self.block):
                data = rest + chunk
                end = data.rfind(b"\n") + 1
                for line in data[:end].splitlines():
                    if (clip_id := line_clip_id(line)) is not None:
                        yield clip_id, line
                offset, rest = offset + end, data[end:]
                self._offsets[shard.name] = offset
