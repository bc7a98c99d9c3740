"""Configuration of `dock-agent receive` (SPEC 7): `[mqtt]` as the dock's, and `[receiver]`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import MqttSection, read_toml, resolve_path
from agent.schema import in_range, parse, pattern, setting
from agent.transfer.receiver.expiry import DEFAULT_PARTIAL_TTL_S, MIN_PARTIAL_TTL_S
from agent.trust.keys import credential_path
from agent.trust.settings import mqtt_trust_problems

DEFAULT_MAX_FILE_BYTES = 64 << 30
MAX_FILE_BYTES_LIMIT = 1 << 62  # far below what os.pwrite can address (2**63 - 1)


@dataclass(frozen=True)
class ReceiverSection:
    """[receiver]: where the central side stores files and who it is on the broker."""

    store_dir: str = setting(doc="directory of received files, {store}/{client_id}/{file_id}/")
    client_id: str = setting(
        "dock-receiver",
        doc="MQTT client id of the receiver",
        check=pattern(r"[A-Za-z0-9_.-]{1,128}", "[A-Za-z0-9_.-]{1,128}"),
    )
    partial_ttl_s: int = setting(
        DEFAULT_PARTIAL_TTL_S,
        doc="seconds without activity after which a transfer never finished is removed",
        check=in_range(MIN_PARTIAL_TTL_S),
    )
    unidentified: str = setting(
        "refuse",
        doc="a command with no Response Topic: refuse (dropped, one log line per transfer) or "
        "store (kept under {store}/_unidentified/, answered nowhere); always refused with "
        "dock_keys_dir",
        choices=("refuse", "store"),
    )
    dock_keys_dir: str = setting(
        "",
        doc="directory of every dock's public key, {client_id}.pub (one OpenSSH line, SPEC 11), "
        "or a systemd credential name; when set, an init or segment not signed by the key of "
        "the dock it claims to be is refused (0x87), and unidentified transfers always are",
    )
    signing_key_file: str = setting(
        "",
        doc="the receiver's Ed25519 private key (PKCS#8 PEM, 0600), which signs receipts; made "
        "at first start with its .pub beside it; default {store_dir}/../receiver.key",
    )
    max_file_bytes: int = setting(
        DEFAULT_MAX_FILE_BYTES,
        doc="largest file an init may declare (bytes)",
        check=in_range(1, MAX_FILE_BYTES_LIMIT),
    )
    max_partials_per_client: int = setting(
        16,
        doc="transfers in progress per client; a new init beyond this is refused (0x97)",
        check=in_range(1, 100_000),
    )


@dataclass(frozen=True)
class ReceiverConfig:
    """The whole receiver configuration."""

    receiver: ReceiverSection = setting(doc="the [receiver] table is required")
    mqtt: MqttSection = setting(default_factory=MqttSection, doc="[mqtt]")

    @property
    def store_dir(self) -> Path:
        """The receiver's store."""
        return Path(self.receiver.store_dir)


def receiver_key_path(cfg: ReceiverConfig) -> Path:
    """`[receiver] signing_key_file` (a path or credential name), default beside the store."""
    name = cfg.receiver.signing_key_file
    if name:
        return credential_path(name)
    return Path(cfg.receiver.store_dir).parent / "receiver.key"


def _cross_problems(cfg: ReceiverConfig) -> list[str]:
    problems: list[str] = []
    if not cfg.receiver.store_dir:
        problems.append("receiver.store_dir = '': expected a directory")
    if bool(cfg.mqtt.tls_cert) != bool(cfg.mqtt.tls_key):
        problems.append("mqtt.tls_cert/tls_key: expected both or neither (mutual TLS)")
    if cfg.mqtt.tls_cert and not cfg.mqtt.tls_ca:
        problems.append("mqtt.tls_ca = '': expected a CA bundle when tls_cert is set")
    problems.extend(mqtt_trust_problems(cfg.mqtt, "never"))  # no password in clear text
    prefix = cfg.mqtt.file_transfer_prefix
    if not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        problems.append(
            f"mqtt.file_transfer_prefix = {prefix!r}: expected a topic without wildcards"
        )
    return problems


def parse_receiver_config(data: dict[str, Any]) -> ReceiverConfig:
    """Validate a parsed TOML document into a ReceiverConfig, or raise ConfigError."""
    return parse(ReceiverConfig, data, _cross_problems)


def load_receiver_config(path: str | os.PathLike[str] | None = None) -> ReceiverConfig:
    """Load the receiver configuration from `path` (default as for every command: see resolve_path)."""
    return parse_receiver_config(read_toml(resolve_path(str(path) if path else None)))
