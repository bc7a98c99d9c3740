"""`dock-agent run`: the daemon in the foreground (systemd runs it)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register `run`."""
    parser = subparsers.add_parser("run", help="run the daemon in the foreground")
    add_config_arg(parser)


def run(args: argparse.Namespace) -> int:
    """Load the config, start the daemon, run until SIGTERM/SIGINT."""
    cfg = load_config(args.config)
    from agent.daemon.wiring import assemble
    from agent.logs import setup_logging

    setup_logging(dock_id=cfg.dock.id)
    daemon = assemble(cfg)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        daemon.stopping.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    try:
        daemon.run_forever()
    finally:
        daemon.stop()
    return 0
