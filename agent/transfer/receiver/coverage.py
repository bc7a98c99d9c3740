"""Which byte ranges of a file are held: a small sorted set of half-open intervals."""

from __future__ import annotations

from collections.abc import Iterable


class Coverage:
    """Merged, sorted, non-overlapping [start, end) ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) as held."""
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        for lo, hi in self._ranges:
            if hi < start or lo > end:
                merged.append((lo, hi))
            else:
                start, end = min(lo, start), max(hi, end)
        merged.append((start, end))
        merged.sort()
        self._ranges = merged

    def covers(self, start: int, end: int) -> bool:
        """True when all of [start, end) is held."""
        return end <= start or any(lo <= start and end <= hi for lo, hi in self._ranges)

    def held(self) -> int:
        """Bytes held."""
        return sum(hi - lo for lo, hi in self._ranges)

    def to_json(self) -> list[list[int]]:
        """The ranges as JSON-able lists."""
        return [[lo, hi] for lo, hi in self._ranges]

    @classmethod
    def from_json(cls, data: object) -> Coverage:
        """Ranges read back from `to_json`; anything malformed counts as nothing held."""
        if not isinstance(data, list):
            return cls()
        pairs = [p for p in data if isinstance(p, list) and len(p) == 2]
        ints = [(a, b) for a, b in pairs if isinstance(a, int) and isinstance(b, int) and 0 <= a]
        return cls(ints)
