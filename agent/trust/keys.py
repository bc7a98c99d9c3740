"""Ed25519 key files in the formats administrators already handle (SPEC 11).

A private key is PKCS#8 PEM, mode 0600, made at first start when missing and refused when
group or others may read it. A public key is one OpenSSH line (`ssh-ed25519 AAAA… comment`),
and its fingerprint is the `SHA256:…` that `ssh-keygen -l -f FILE` prints.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.durable import fsync_dir

logger = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 16_384


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the cause, never the key."""


def credential_path(name: str) -> Path:
    """A path, or under systemd a bare credential name in `$CREDENTIALS_DIRECTORY`."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(cred_dir, name) if cred_dir and "/" not in name else Path(name)


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large for a key file")
    return data


def check_private_mode(path: Path) -> None:
    """Refuse a private key that group or others may read (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: private key readable by group or others (mode {stat.S_IMODE(mode):04o});"
            " expected 0600 (chmod 600)"
        )


def load_private(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PKCS#8 PEM at `path` (mode checked)."""
    check_private_mode(path)
    data = _read_bounded(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not an unencrypted PKCS#8 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def create_private(path: Path) -> Ed25519PrivateKey:
    """Make a new key pair at `path` (0600, written whole or not at all) and its `.pub` beside."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        os.unlink(tmp)
        return load_private(path)
    os.unlink(tmp)
    fsync_dir(path.parent)
    return key


def load_or_create_private(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at `path`, made first when missing; and whether it was made now."""
    if not path.exists() and not path.is_symlink():
        return create_private(path), True
    return load_private(path), False


def public_line(key: Ed25519PublicKey, comment: str) -> str:
    """The one-line OpenSSH public key: `ssh-ed25519 AAAA… comment`."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    text = line.decode("ascii")
    return f"{text} {comment}" if comment else text


def parse_public(text: str, where: str) -> Ed25519PublicKey:
    """A public key from its OpenSSH line (a comment after it is allowed)."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise KeyFileError(f"{where}: expected one line 'ssh-ed25519 AAAA… name'")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{where}: not a valid ssh-ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The public key in the `.pub` file at `path`."""
    data = _read_bounded(path)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not an OpenSSH public key line") from None
    return parse_public(text, str(path))


def fingerprint(key: Ed25519PublicKey) -> str:
    """`SHA256:…` as `ssh-keygen -l` prints it (base64 of the wire blob's SHA-256, unpadded)."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def write_public(path: Path, key: Ed25519PublicKey, comment: str) -> None:
    """Write the `.pub` line (0644: public keys are meant to travel)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(public_line(key, comment) + "\n", encoding="ascii")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def key_pair(path: Path, comment: str, whose: str, give_to: str) -> Ed25519PrivateKey:
    """The private key at `path`, made at first start with its `.pub` beside (re-written when
    missing); a key made now is logged with its fingerprint and who should get the `.pub`."""
    key, made = load_or_create_private(path)
    pub = path.with_suffix(".pub")
    if made or not pub.exists():
        try:
            write_public(pub, key.public_key(), comment)
        except OSError as exc:  # a read-only credential directory: `dock-agent keys` prints it
            logger.warning("could not write %s: %s", pub, exc.strerror or exc)
    if made:
        logger.info(
            "made %s key pair %s (fingerprint %s): give %s to %s",
            whose,
            path,
            fingerprint(key.public_key()),
            pub,
            give_to,
        )
    return key
