"""`dock-agent run`: the daemon in the foreground (systemd runs it)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from agent.cli import add_config_arg
from agent.config import load_config, resolve_path
from agent.schema import ConfigError

logger = logging.getLogger(__name__)

HELP = """\
Run the docking-station daemon in the foreground until SIGTERM or Ctrl-C: it watches the
bays, offloads and verifies every clip of a docked recorder, keeps the custody log, and
reports and syncs over MQTT. systemd runs it as dock-agent.service. SIGHUP (systemctl
reload dock-agent) re-reads the configuration: log_level, [policy], [retention] and
mqtt.rate_limit_bytes_per_s apply at once; other changes are logged as needing a restart;
a configuration with errors is refused and the daemon keeps the one it runs on."""


def add_parser(subparsers: Any) -> None:
    """Register `run`."""
    parser = subparsers.add_parser("run", help="run the daemon in the foreground", description=HELP)
    add_config_arg(parser)


def reload_config(daemon: Any, path: str) -> bool:
    """Re-read `path` and apply it; on any problem keep running on the old configuration."""
    from agent.daemon import sdnotify

    sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        new = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("reload refused, still running on the previous configuration: %s", problem)
        sdnotify.ready()
        return False
    try:
        plan = daemon.reload(new)
    except Exception:  # a reload must never end the daemon
        logger.exception("reload failed; still running on the previous configuration")
        sdnotify.ready()
        return False
    for key in plan.need_restart:
        logger.warning("reload: %s changed; it takes effect after a restart, not now", key)
    logger.info("reload: %s applied (%s)", path, ", ".join(plan.applied) or "nothing changed")
    sdnotify.ready()
    return True


def run(args: argparse.Namespace) -> int:
    """Load the config, start the daemon, run until SIGTERM/SIGINT; SIGHUP reloads."""
    path = resolve_path(args.config)
    cfg = load_config(path)
    from agent.daemon.reload import LOG_LEVELS
    from agent.daemon.wiring import assemble
    from agent.logs import setup_logging

    hup = threading.Event()
    signal.signal(signal.SIGHUP, lambda _n, _f: hup.set())  # from now on HUP never ends us
    setup_logging(LOG_LEVELS[cfg.dock.log_level], dock_id=cfg.dock.id)
    daemon = assemble(cfg)

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping", signum)
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    try:
        while not daemon.stopping.wait(0.2):
            if hup.is_set():
                hup.clear()
                reload_config(daemon, path)
    finally:
        daemon.stop()
    return 0
