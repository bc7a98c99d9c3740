"""`dock-agent receive`: the reference central receiver of EMQX file transfer (SPEC 7)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from agent.cli import add_config_arg
from agent.commands import receive_verify
from agent.daemon import sdnotify
from agent.schema import ConfigError
from agent.transfer.receiver.config import ReceiverConfig, load_receiver_config, receiver_key_path
from agent.transfer.receiver.server import Receiver
from agent.transfer.receiver.trustdir import DockKeys, old_key_files
from agent.trust.dock import private_file_problems
from agent.trust.keys import KeyFileError

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register `receive`."""
    parser = subparsers.add_parser(
        "receive",
        help="the central receiver of evidence, for brokers without EMQX file transfer",
        description="Run on the central server: receive the clips docks send over MQTT (EMQX's\n"
        "file-transfer protocol, served here for Mosquitto and other brokers), check each\n"
        "segment and the whole file by SHA-256 and store it with its manifest. Config:\n"
        "[mqtt] and [receiver] store_dir (see config/receiver.toml); runs until SIGTERM.\n\n"
        "dock-agent receive verify [--dock ID] [--json]: check, per dock and chain, the custody\n"
        "chain central holds (continuous, signed) against the clips it holds (SPEC 8.1); one\n"
        "line per dock, one MISMATCH line per problem, exit 1 on any.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=["verify"], help="verify: check the chains")
    add_config_arg(parser)
    receive_verify.add_arguments(parser)


def _stop_on_signals(stop: threading.Event, hup: threading.Event) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _n, _f: stop.set())
    signal.signal(signal.SIGHUP, lambda _n, _f: hup.set())  # a stray HUP never ends receiving


def run(args: argparse.Namespace) -> int:
    """Receive files until SIGTERM/SIGINT; 2 on bad configuration, 1 if the store is unusable."""
    if getattr(args, "action", None) == "verify":
        return receive_verify.run(args)
    if getattr(args, "dock", None) or getattr(args, "json", False):
        print("dock-agent: receive: --dock and --json go with `receive verify`", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_receiver_config(args.config)
        receiver = receiver_from_config(cfg)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"dock-agent: config: {problem}", file=sys.stderr)
        return 2
    stop, hup = threading.Event(), threading.Event()
    _stop_on_signals(stop, hup)
    try:
        receiver.start()
    except OSError as exc:
        print(f"dock-agent: receive: cannot use {cfg.store_dir}: {exc}", file=sys.stderr)
        return 1
    logger.info("receiving into %s as %s", cfg.store_dir, cfg.receiver.client_id)
    watchdog = sdnotify.Watchdog()
    watchdog.add_check("receiver workers", receiver.healthy)
    watchdog.start()
    sdnotify.ready(f"receiving into {cfg.store_dir}")
    while not stop.wait(0.5) and not receiver.failed.is_set():
        if hup.is_set():
            hup.clear()
            logger.warning(
                "SIGHUP: the receiver reads its configuration only at start; "
                "restart it to apply a change (systemctl restart dock-agent-receiver)"
            )
    sdnotify.stopping()
    watchdog.stop()
    receiver.stop()
    if receiver.failed.is_set():
        logger.critical("receiver stopped: %s; exit 1", receiver.failure)
        return 1
    logger.info("receiver stopped")
    return 0


def receiver_from_config(cfg: ReceiverConfig) -> Receiver:
    """A receiver as `cfg` says (not started); ConfigError for an unusable or exposed key."""
    section = cfg.receiver
    exposed = private_file_problems(cfg.mqtt)
    if exposed:
        raise ConfigError(exposed)
    if section.dock_keys_dir:
        old = old_key_files(DockKeys(section.dock_keys_dir).directory)
        if old:
            raise ConfigError([f"receiver.dock_keys_dir = {section.dock_keys_dir!r}: {MIGRATE}"])
    try:
        return _receiver(cfg)
    except KeyFileError as exc:
        where = f"receiver.signing_key_file = {section.signing_key_file!r}"
        raise ConfigError([f"{where}: {exc}"]) from None


MIGRATE = (
    "holds HMAC transfer keys ({client_id}.key), which are no longer read (SPEC 11); expected "
    "each dock's public key as {client_id}.pub (`dock-agent keys` on the dock prints it): "
    "add those, then remove the .key files"
)


def _receiver(cfg: ReceiverConfig) -> Receiver:
    section = cfg.receiver
    return Receiver(
        cfg.store_dir,
        cfg.mqtt,
        section.client_id,
        partial_ttl_s=section.partial_ttl_s,
        unidentified=section.unidentified,
        dock_keys_dir=section.dock_keys_dir or None,
        max_file_bytes=section.max_file_bytes,
        max_partials_per_client=section.max_partials_per_client,
        signing_key_file=receiver_key_path(cfg),
    )
