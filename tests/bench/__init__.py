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
