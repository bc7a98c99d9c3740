"""The messages a dock and central sign (SPEC 11, 8.1), and checks that never raise (pure).

Every signature is Ed25519 over the UTF-8 bytes of one message, sent as 128 hex digits.
`verify` accepts anything a peer could send (any JSON type, non-hex, non-ASCII, huge) and
answers False for all of it: a hostile field is a refusal, never an exception.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_HEX = 128
_HEX = frozenset("0123456789abcdefABCDEF")


def init_digest(init_payload: dict[str, Any]) -> str:
    """SHA-256 hex of the init payload without `user_data.dock_sig`, canonical JSON."""
    payload = dict(init_payload)
    user_data = payload.get("user_data")
    if isinstance(user_data, dict) and "dock_sig" in user_data:
        payload["user_data"] = {k: v for k, v in user_data.items() if k != "dock_sig"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def init_message(client_id: str, file_id: str, init_payload: dict[str, Any]) -> str:
    """What `user_data.dock_sig` signs: the whole init (name, size, checksum, user_data, ...)."""
    return f"init\n{client_id}\n{file_id}\n{init_digest(init_payload)}"


def segment_message(client_id: str, file_id: str, offset: int, segment: bytes) -> str:
    """What a segment's `dock_sig` user property signs."""
    return segment_digest_message(client_id, file_id, offset, hashlib.sha256(segment).hexdigest())


def segment_digest_message(client_id: str, file_id: str, offset: int, sha256_hex: str) -> str:
    """`segment_message` from the segment's SHA-256 (lowercase hex) already computed."""
    return f"seg\n{client_id}\n{file_id}\n{offset}\n{sha256_hex}"


def fin_message(client_id: str, file_id: str, size: int, sha256: str, nonce: str) -> str:
    """What central's `receipt` signs: this fin attempt's nonce makes an old receipt useless."""
    return f"fin\n{client_id}\n{file_id}\n{size}\n{sha256.lower()}\n{nonce}"


def refusal_message(client_id: str, file_id: str, size: int, reason_code: int, nonce: str) -> str:
    """What central's `receipt` on a refused `fin` signs: the refusal is the receiver's own."""
    return f"fin-refused\n{client_id}\n{file_id}\n{size}\n{reason_code}\n{nonce}"


def refused_message(
    client_id: str,
    topic: str,
    payload_sha256: str,
    dock_sig: str,
    reason_code: int,
    correlation: bytes,
) -> str:
    """What central's `receipt` on a refused init or segment signs: that exact command, refused.

    The command is the topic, its payload's SHA-256 and the `dock_sig` user property it came
    with ("" for none), hashed so that no field a client chose can shift another; the MQTT
    correlation data (random per command) makes the refusal answer that one publish only.
    """
    fields = json.dumps([topic, payload_sha256, dock_sig], ensure_ascii=False)
    command = hashlib.sha256(fields.encode("utf-8", "surrogatepass")).hexdigest()
    return f"refused\n{client_id}\n{command}\n{reason_code}\n{correlation.hex()}"


def custody_message(dock_id: str, chain_id: str, last_seq: int, head_hash: str) -> str:
    """What a custody chunk's `chain_sig` signs (SPEC 8.1)."""
    return f"custody\n{dock_id}\n{chain_id}\n{last_seq}\n{head_hash}"


def sign(key: Ed25519PrivateKey, message: str) -> str:
    """The signature of `message`, as 128 lowercase hex digits."""
    return key.sign(message.encode("utf-8", "surrogatepass")).hex()


def verify(key: Ed25519PublicKey, message: str, signature: object) -> bool:
    """True only when `signature` is 128 hex digits that verify `message` with `key`."""
    if not isinstance(signature, str) or len(signature) != SIGNATURE_HEX:
        return False
    if not _HEX.issuperset(signature):
        return False
    try:
        key.verify(bytes.fromhex(signature), message.encode("utf-8", "surrogatepass"))
    except (InvalidSignature, ValueError):
        return False
    return True
