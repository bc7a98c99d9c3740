"""`python -m tests.bench.compare RUN.md [RUN.md ...]`: the runs' rows side by side.

Each RUN.md is a table `python -m tests.bench` wrote (bench-results/results.md). The output is
one markdown table: each row's target, its ratio in every run, and whether every run met it. A
row missing from a run counts as not met there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One row of one run."""

    what: str
    target: str
    ratio: str
    ok: bool


@dataclass(frozen=True)
class Run:
    """One run's header line and rows, in order."""

    header: str
    rows: list[Result]


def _cells(line: str) -> list[str]:
    """The cells of a markdown table line (escaped pipes kept inside their cell)."""
    cells, cell, escaped = [], "", False
    for char in line.strip().strip("|"):
        if char == "|" and not escaped:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
        escaped = char == "\\"
    cells.append(cell.strip())
    return cells


def parse(text: str) -> Run:
    """A results table as the bench writes it; raises ValueError on anything else."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Benchmarks"):
        raise ValueError("not a bench results file: its first line is not 'Benchmarks, ...'")
    rows = []
    for line in lines[1:]:
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| what |"):
            continue
        cells = _cells(line)
        if len(cells) != 6:
            raise ValueError(f"a row with {len(cells)} cells, not 6: {line[:80]}")
        what, target, _baseline, _measured, ratio, ok = cells
        rows.append(Result(what, target, ratio, ok == "yes"))
    return Run(lines[0], rows)


def compare(runs: list[Run]) -> str:
    """The rows of every run side by side (keyed by their `what` and target)."""
    keys: dict[tuple[str, str], None] = {}
    for run in runs:
        for row in run.rows:
            keys[(row.what, row.target)] = None
    found = [{(r.what, r.target): r for r in run.rows} for run in runs]
    head = ["what", "target", *(f"run {i}" for i in range(1, len(runs) + 1)), "met in every run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        results = [rows.get(key) for rows in found]
        cells = [f"{r.ratio} ({'yes' if r.ok else 'no'})" if r else "missing" for r in results]
        every = all(r is not None and r.ok for r in results)
        lines.append(
            "| "
            + " | ".join([*key, *cells, "yes" if every else "**NO**"]).replace("\n", " ")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the runs' headers and the side-by-side table; exit 1 when a row missed anywhere."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for i, name in enumerate(argv, 1):
        try:
            runs.append(parse(Path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        print(f"run {i}: {runs[-1].header}")
    print()
    print(compare(runs))
    return 0 if all(r.ok for run in runs for r in run.rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
