"""EMQX's local segment store, one node: a filemeta and segments per transfer, ttl GC, coverage.

Modelled on emqx_ft_storage_fs.erl (store_filemeta/3, store_segment/3), emqx_ft_storage_fs_gc.erl
(try_collect_transfer/4, get_segments_ttl/2) and emqx_ft_assembly.erl (coverage/2). Times are in
EMQX seconds from an injected clock, so a test can run a day of EMQX time in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # a transfer: (client id, file id), emqx_ft:transfer()


@dataclass
class Fragment:
    """One stored segment (EMQX's `SEG.{offset}.{size}` file) and its modification time."""

    data: bytes
    mtime: float


@dataclass
class Transfer:
    """What EMQX holds for a transfer before assembly: its MANIFEST.json and its segments."""

    meta: dict[str, Any] | None = None
    meta_mtime: float = 0.0
    segments: dict[tuple[int, int], Fragment] = field(default_factory=dict)


class SegmentStore:
    """Filemetas and segments keyed by transfer; fragments older than the transfer's ttl vanish."""

    def __init__(
        self, clock: Callable[[], float], min_ttl: float = 300.0, max_ttl: float = 86400.0
    ) -> None:
        self.clock = clock
        self.min_ttl = min_ttl  # file_transfer.storage.local.segments.gc.minimum_segments_ttl
        self.max_ttl = max_ttl  # ... maximum_segments_ttl (24h by default)
        self.transfers: dict[Key, Transfer] = {}

    def ttl(self, key: Key) -> float:
        """The transfer's ttl: its filemeta's segments_ttl clamped to [min, max], else max."""
        t = self.transfers.get(key)
        asked = t.meta.get("segments_ttl") if t and t.meta else None
        if asked is None:  # clamp({Min, Max}, undefined) is Max in Erlang term order
            return self.max_ttl
        return float(min(self.max_ttl, max(self.min_ttl, asked)))

    def collect(self, key: Key) -> None:
        """Forget fragments as EMQX's GC does: those modified at least `ttl` ago.

        EMQX's GC runs every `gc.interval` (1 h by default), so EMQX forgets somewhere between
        ttl and ttl + interval; the fixture forgets at exactly ttl, the strictest case.
        """
        t = self.transfers.get(key)
        if t is None:
            return
        cutoff = self.clock() - self.ttl(key)
        if t.meta is not None and t.meta_mtime <= cutoff:
            t.meta = None
        t.segments = {k: f for k, f in t.segments.items() if f.mtime > cutoff}
        if t.meta is None and not t.segments:
            del self.transfers[key]

    def store_filemeta(self, key: Key, meta: dict[str, Any], disk_error: str | None) -> str | None:
        """Keep the filemeta; an equal one only refreshes it, a differing one is a conflict."""
        self.collect(key)
        t = self.transfers.setdefault(key, Transfer())
        if t.meta is not None:
            if t.meta == meta:
                t.meta_mtime = self.clock()  # touch_file/1
                return None
            return "filemeta_conflict"
        if disk_error:
            return disk_error
        t.meta, t.meta_mtime = dict(meta), self.clock()
        return None

    def store_segment(
        self, key: Key, offset: int, data: bytes, disk_error: str | None
    ) -> str | None:
        """Keep a segment (no filemeta needed: EMQX stores segments before init too)."""
        if disk_error:
            return disk_error
        self.collect(key)
        t = self.transfers.setdefault(key, Transfer())
        t.segments[(offset, len(data))] = Fragment(data, self.clock())
        return None

    def filemeta(self, key: Key) -> dict[str, Any] | None:
        """The transfer's filemeta, if EMQX still holds it."""
        self.collect(key)
        t = self.transfers.get(key)
        return t.meta if t else None

    def coverage(self, key: Key, size: int) -> list[bytes] | None:
        """Segments covering [0, size) end to end, or None (EMQX: `incomplete`)."""
        if self.filemeta(key) is None:
            return None  # {incomplete, {missing, filemeta}}
        t = self.transfers[key]
        edges: dict[int, list[tuple[int, bytes]]] = {}
        for (offset, length), frag in t.segments.items():
            if length:  # empty segments are valid but meaningless for coverage
                edges.setdefault(offset, []).append((offset + length, frag.data))
        return _path(edges, 0, size)

    def forget(self, key: Key) -> None:
        """Drop a transfer's fragments (GC of a complete transfer)."""
        self.transfers.pop(key, None)


def _path(edges: dict[int, list[tuple[int, bytes]]], start: int, end: int) -> list[bytes] | None:
    """A chain of segments from `start` to `end` (iterative: clips have thousands of segments)."""
    came: dict[int, tuple[int, bytes]] = {}
    todo, seen = [start], {start}
    while todo:
        at = todo.pop()
        if at == end:
            chain: list[bytes] = []
            while at != start:
                at, data = came[at][0], came[at][1]
                chain.append(data)
            return chain[::-1]
        for nxt, data in edges.get(at, []):
            if nxt <= end and nxt not in seen:
                seen.add(nxt)
                came[nxt] = (at, data)
                todo.append(nxt)
    return None
