"""`dock-agent keys`: this dock's (or central's) public key and fingerprint, made if missing."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
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
        from agent.trust.dock import load_signing_key, public_path, signing_key_path

        cfg = load_config(args.config)
        path = signing_key_path(cfg)
        made = not path.exists()
        key = load_signing_key(cfg)
        if made:
            hand_over(cfg.data_dir, [path.parent, path, public_path(path)])
        comment = cfg.client_id
    print(keys.public_line(key.public_key(), comment))
    print(keys.fingerprint(key.public_key()))
    return 0


def hand_over(data_dir: Path, paths: list[Path]) -> None:
    """Key files root just made in the daemon's data_dir: given to the daemon's user, as it
    would have made them at its first start (else it could not read its own key)."""
    if os.geteuid() != 0:
        return
    try:
        owner = data_dir.stat()
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for path in paths:
        if path.is_relative_to(data_dir) and path.exists():
            os.chown(path, owner.st_uid, owner.st_gid)
