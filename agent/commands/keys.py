"""`dock-agent keys`: this dock's (or central's) public key and fingerprint, made if missing."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli import add_config_arg
from agent.trust import keys


def add_parser(subparsers: Any) -> None:
    """Register `keys`."""
    parser = subparsers.add_parser(
        "keys",
        help="print this dock's public key and fingerprint (for enrolling it at central)",
        description="Print this dock's public key as the one-line .pub file it is (give it to\n"
        "central as {dock_keys_dir}/{client_id}.pub) and its SHA256 fingerprint (the status\n"
        "page shows the same, so a person can compare). With --receiver and a receiver\n"
        "configuration: central's key (give it to every dock as mqtt.central_key_file).\n"
        "The key pair is made (0600) if it does not exist yet; the private key never leaves.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arg(parser)
    parser.add_argument(
        "--receiver", action="store_true", help="-c names a receiver configuration: central's key"
    )


def run(args: argparse.Namespace) -> int:
    """Print the .pub line and the fingerprint; 2 on bad configuration or an unusable key."""
    if args.receiver:
        from agent.transfer.receiver.config import load_receiver_config, receiver_key_path
        from agent.transfer.receiver.trustdir import load_receiver_key

        rcfg = load_receiver_config(args.config)
        try:
            key = load_receiver_key(receiver_key_path(rcfg), rcfg.receiver.client_id)
        except keys.KeyFileError as exc:
            from agent.schema import ConfigError

            raise ConfigError([f"receiver.signing_key_file: {exc}"]) from None
        comment = rcfg.receiver.client_id
    else:
        from agent.config import load_config
        from agent.trust.dock import load_signing_key

        cfg = load_config(args.config)
        key = load_signing_key(cfg)
        comment = cfg.client_id
    print(keys.public_line(key.public_key(), comment))
    print(keys.fingerprint(key.public_key()))
    return 0
