"""`python -m tests.bench.receive_verify_scale [--docks 50] [--entries 150000] [--dir DIR]`.

Writes a synthetic central store (tests/bench/chain_synth.py: per dock one chain of
`--entries` custody entries in signed runs, `--at-central` clips held at central, the rest
pending), then runs `dock-agent receive verify` on it as a subprocess and prints its wall
time, CPU time and peak RSS (/usr/bin/time), and the size of what it read. Not a SPEC 10 row; the
figures go in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.chain_synth import populate


def measure(config: Path) -> tuple[float, float, int, int, int]:
    """(wall s, CPU s, peak RSS KiB, exit code, output lines) of one receive verify.

    Run under /usr/bin/time: a child forked from this process would count this process's
    pages (the generator's) in its own peak RSS until it execs.
    """
    out = config.parent / "time.txt"
    start = time.monotonic()
    proc = subprocess.Popen(
        [
            "/usr/bin/time",
            "-o",
            str(out),
            "-f",
            "%M %U %S",
            sys.executable,
            "-m",
            "agent",
            "receive",
            "verify",
            "-c",
            str(config),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = sum(1 for _ in proc.stdout)
    code = proc.wait()
    wall = time.monotonic() - start
    rss, user, system = out.read_text().split()[-3:]
    return wall, float(user) + float(system), int(rss), code, lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docks", type=int, default=50)
    parser.add_argument("--entries", type=int, default=150_000)
    parser.add_argument("--at-central", type=int, default=2_000)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/receive-verify-scale"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    store, keys_dir = args.dir / "store", args.dir / "dock-keys"
    began = time.monotonic()
    populate(store, keys_dir, args.docks, args.entries, args.at_central)
    print(
        f"generated {args.docks} docks x {args.entries} entries in {time.monotonic() - began:.0f} s"
    )
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    config = args.dir / "receiver.toml"
    config.write_text(
        f'[mqtt]\nport = 1\n[receiver]\nstore_dir = "{store}"\ndock_keys_dir = "{keys_dir}"\n'
    )
    subprocess.run(["sync"], check=True)
    for attempt in range(1, args.runs + 1):
        wall, cpu, rss, code, lines = measure(config)
        print(
            f"run {attempt}: receive verify over {args.docks * args.entries:,} entries "
            f"({size / 2**20:,.0f} MiB): {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS "
            f"{rss / 1024:.1f} MiB, exit {code}, {lines:,} lines"
        )
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
