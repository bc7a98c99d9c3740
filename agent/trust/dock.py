"""This dock's keys (SPEC 11): its signing key, central's public key, and what follows from them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.schema import ConfigError
from agent.trust import keys, settings

if TYPE_CHECKING:
    from agent.config import DockConfig, MqttSection

logger = logging.getLogger(__name__)

DELETES_HELD = "deletes_held"


@dataclass(frozen=True)
class DockTrust:
    """What the sender needs: the dock's key, and central's (None: receipts cannot be checked)."""

    signing_key: Ed25519PrivateKey
    central_key: Ed25519PublicKey | None
    upstream: str

    @property
    def proves_acks(self) -> bool:
        """Whether an ack proves central holds the clip: a checked receipt, or EMQX (SPEC 11)."""
        return self.upstream == "emqx" or self.central_key is not None

    @property
    def fingerprint(self) -> str:
        """`SHA256:…` of the dock's public key."""
        return keys.fingerprint(self.signing_key.public_key())


def signing_key_path(cfg: DockConfig) -> Path:
    """`[mqtt] signing_key_file` (a path or systemd credential name), default in data_dir."""
    name = cfg.mqtt.signing_key_file
    return keys.credential_path(name) if name else cfg.data_dir / "keys" / "dock.key"


def public_path(private: Path) -> Path:
    """The `.pub` beside a private key file (`dock.key` -> `dock.pub`)."""
    return private.with_suffix(".pub")


def load_signing_key(cfg: DockConfig) -> Ed25519PrivateKey:
    """The dock's key, made (0600, with its .pub) when missing; a bad file is a ConfigError."""
    path = signing_key_path(cfg)
    where = f"mqtt.signing_key_file = {cfg.mqtt.signing_key_file!r}"
    try:
        return keys.key_pair(path, cfg.client_id, "this dock's", "central")
    except keys.KeyFileError as exc:
        raise ConfigError([f"{where}: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{where}: {path}: cannot create it: {exc.strerror or exc}"]) from None


def load_central_key(cfg: DockConfig) -> Ed25519PublicKey | None:
    """Central's public key from `[mqtt] central_key_file`; None when unset."""
    if not cfg.mqtt.central_key_file:
        return None
    path = keys.credential_path(cfg.mqtt.central_key_file)
    try:
        return keys.load_public(path)
    except keys.KeyFileError as exc:
        raise ConfigError(
            [f"mqtt.central_key_file = {cfg.mqtt.central_key_file!r}: {exc}"]
        ) from None


def private_file_problems(mqtt: MqttSection) -> list[str]:
    """Secret files of `[mqtt]` that group or others may read (refused like a bad config)."""
    problems = []
    for name in ("tls_key", "password_file"):
        value = getattr(mqtt, name)
        path = keys.credential_path(value) if value else None
        if path is not None and path.exists():
            try:
                keys.check_private_mode(path)
            except keys.KeyFileError as exc:
                problems.append(f"mqtt.{name} = {value!r}: {exc}")
    return problems


def load_dock_trust(cfg: DockConfig) -> DockTrust:
    """Everything the dock's trust needs, checked at start (ConfigError naming each problem)."""
    problems = private_file_problems(cfg.mqtt)
    if problems:
        raise ConfigError(problems)
    return DockTrust(load_signing_key(cfg), load_central_key(cfg), cfg.mqtt.upstream)


def deletes_held_reason(cfg: DockConfig) -> str | None:
    """Why recorders are not freed although the policy says after the upstream ack (pure)."""
    return settings.deletes_held_reason(cfg.mqtt, cfg.policy.delete_from_recorder)


def dock_fingerprint(cfg: DockConfig) -> str | None:
    """The dock's fingerprint for people (status, page); None before the key exists. Never raises."""
    path = signing_key_path(cfg)
    try:
        return keys.fingerprint(keys.load_public(public_path(path)))
    except (keys.KeyFileError, OSError):
        pass
    try:
        return keys.fingerprint(keys.load_private(path).public_key())
    except (keys.KeyFileError, OSError):
        return None
