"""Which byte ranges of a file are held: sorted half-open intervals, found by bisection."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

MAX_RANGES = 4096  # separate ranges per transfer; a segment that would make more is refused


class Coverage:
    """Merged, sorted, non-overlapping, non-touching [start, end) ranges.

    Two parallel lists searched by bisection: adding, testing and counting cost O(log n) plus
    one list splice, never a walk over every range (a sender of 1-byte segments made the old
    list-rebuilding version quadratic).
    """

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._held = 0
        for start, end in ranges:
            self.add(start, end)

    def _span(self, start: int, end: int) -> tuple[int, int]:
        """Indexes [i, j) of the ranges that overlap or touch [start, end)."""
        return bisect_left(self._ends, start), bisect_right(self._starts, end)

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) as held."""
        if end <= start:
            return
        i, j = self._span(start, end)
        if i < j:
            start, end = min(start, self._starts[i]), max(end, self._ends[j - 1])
            self._held -= sum(self._ends[k] - self._starts[k] for k in range(i, j))
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]
        self._held += end - start

    def ranges_after(self, start: int, end: int) -> int:
        """How many separate ranges there would be once [start, end) is added."""
        if end <= start:
            return len(self._starts)
        i, j = self._span(start, end)
        return len(self._starts) + 1 - (j - i)

    def covers(self, start: int, end: int) -> bool:
        """True when all of [start, end) is held."""
        if end <= start:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def held(self) -> int:
        """Bytes held."""
        return self._held

    def __len__(self) -> int:
        return len(self._starts)

    def to_json(self) -> list[list[int]]:
        """The ranges as JSON-able lists."""
        return [[lo, hi] for lo, hi in zip(self._starts, self._ends, strict=True)]

    @classmethod
    def from_json(cls, data: object) -> Coverage:
        """Ranges read back from `to_json`; anything malformed counts as nothing held."""
        if not isinstance(data, list):
            return cls()
        pairs = [p for p in data if isinstance(p, list) and len(p) == 2]
        ints = [(a, b) for a, b in pairs if isinstance(a, int) and isinstance(b, int) and 0 <= a]
        return cls(ints)
