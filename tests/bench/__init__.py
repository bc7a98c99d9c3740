"""Benchmarks of SPEC 10: each bench_*.py module returns rows of one results table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the results table: a target, its same-run baseline and what was measured."""

    what: str
    target: str
    baseline: str
    measured: str
    ratio: float | None
    ok: bool


def percentile(samples: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of samples."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(samples: list[float]) -> float:
    """The median of samples."""
    return statistics.median(samples)


def spread(samples: list[float], unit: str = "s", digits: int = 2) -> str:
    """`median unit (min–max)` of samples, e.g. `0.91 s (0.88–0.97)`."""
    lo, hi = min(samples), max(samples)
    return f"{median(samples):.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratios(ours: list[float], base: list[float]) -> str:
    """The spread of the per-run ratios of interleaved runs, e.g. `runs 1.21–1.40 ×`."""
    each = [a / b for a, b in zip(ours, base, strict=True)]
    return f"per-run ratio {min(each):.2f}–{max(each):.2f}"
