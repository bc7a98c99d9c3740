"""`dock-agent demo`: the whole product end to end on this machine, with a readable summary."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `demo` (and --keep)."""
    parser = subparsers.add_parser(
        "demo",
        help="see it work: a broker, the central receiver and a dock with two simulated recorders",
        description="Run everything on this machine, no hardware and no arguments needed: a\n"
        "Mosquitto broker, the central receiver and a dock whose two simulated recorders are\n"
        "offloaded and synced; prints a summary and the status page's address. Needs the\n"
        "mosquitto and ffmpeg programs installed (Debian: apt install mosquitto ffmpeg); writes\n"
        "only to a temporary directory.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the dock, its status page, the receiver and the broker running until Ctrl-C",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every clip arrived at central intact."""
    from agent.demo.run import main

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(keep=args.keep)
    except (RuntimeError, TimeoutError) as exc:
        print(f"dock-agent demo: {exc}", file=sys.stderr)
        return 1
