"""Transfer keys and signatures (SPEC 11): the dock signs each init, the receiver each fin (pure)."""

from __future__ import annotations

import hashlib
import hmac
import re

KEY_BYTES = 32
_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")


class TransferKeyError(ValueError):
    """A transfer key that is not 32 bytes written as 64 hex digits."""


def parse_key(text: str, where: str) -> bytes:
    """A key file's content (64 hex digits, surrounding whitespace ignored) as bytes.

    `where` names the file in the error; the key itself never appears in a message.
    """
    value = text.strip()
    if not _KEY_RE.fullmatch(value):
        raise TransferKeyError(f"{where}: expected {KEY_BYTES} random bytes as 64 hex digits")
    return bytes.fromhex(value)


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def init_signature(key: bytes, client_id: str, file_id: str, size: int, sha256: str) -> str:
    """`user_data.dock_sig`: HMAC-SHA256 over "init\\n{client_id}\\n{file_id}\\n{size}\\n{sha256}"."""
    return _mac(key, f"init\n{client_id}\n{file_id}\n{size}\n{sha256.lower()}")


def fin_receipt(key: bytes, client_id: str, file_id: str, size: int, sha256: str) -> str:
    """The receiver's `receipt` on a successful fin: HMAC-SHA256 over "fin\\n...": SPEC 11."""
    return _mac(key, f"fin\n{client_id}\n{file_id}\n{size}\n{sha256.lower()}")


def valid(expected: str, given: object) -> bool:
    """Constant-time comparison of a hex signature with what a peer sent (any type)."""
    return isinstance(given, str) and hmac.compare_digest(expected, given.lower())
