"""`python -m tests.bench [--quick] [--only NAME[:PART]]`: run the benchmarks, print and save the table.

`--only sync:uplink` runs `run_uplink` of bench_sync alone (a module's part, where it has one);
`--only sync:mix` the docking's mix over the same uplink; `--only sync:loopback` the loopback
rows (store on disk, on tmpfs, and against a drained bare publisher).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.bench import Row

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "bench-results" / "results.md"


def discover(only: str | None) -> list[str]:
    """Names (without the bench_ prefix) of the benchmark modules, optionally just one."""
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(HERE)])
        if m.name.startswith("bench_")
    )
    if only is not None:
        wanted = only.removeprefix("bench_")
        if wanted.partition(":")[0] not in names:
            raise SystemExit(f"--only {only}: no such benchmark (have: {', '.join(names)})")
        names = [wanted]
    return names


def run_one(name: str, quick: bool) -> list[Row]:
    """Run one benchmark module; a crash becomes a failed row, not a lost table."""
    try:
        module_name, _, part = name.partition(":")
        module = importlib.import_module(f"tests.bench.bench_{module_name}")
        run: Callable[[bool], list[Row]] = getattr(module, f"run_{part}" if part else "run")
        return run(quick)
    except Exception as exc:  # one broken benchmark must not hide the others
        traceback.print_exc()
        return [Row(f"bench_{name}", "runs", "-", f"error: {exc!r}", None, False)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| what | target | baseline | measured | ratio | ok |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        cells = [r.what, r.target, r.baseline, r.measured, ratio, "yes" if r.ok else "**NO**"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def header(quick: bool, seconds: float) -> str:
    """Where and how the table was measured."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    mode = " (--quick)" if quick else ""
    return (
        f"Benchmarks{mode}, {when}, {platform.node()}, {platform.machine()}, "
        f"Python {platform.python_version()}, {seconds:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only",
        metavar="NAME",
        help="run one module, e.g. index (sync:uplink, sync:mix, sync:loopback: those rows only)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows: list[Row] = []
    for name in discover(args.only):
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        rows.extend(run_one(name, args.quick))
    text = f"{header(args.quick, time.monotonic() - started)}\n\n{table(rows)}\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(f"written to {RESULTS}", file=sys.stderr)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
