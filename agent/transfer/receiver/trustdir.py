"""The receiver's side of SPEC 11: each dock's public key, and what its inits and segments carry.

Every check takes whatever a broker client sent (any JSON type, non-hex, non-ASCII, huge
numbers) and answers with a refusal (0x87), never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.transfer import protocol as p
from agent.trust import keys, signatures

logger = logging.getLogger(__name__)

SIG_PROPERTY = "dock_sig"
MAX_FIN_PAYLOAD = 256
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_CACHED = 4096  # dock keys kept parsed (re-read when the file changes)


class DockKeys:
    """`{dock_keys_dir}/{client_id}.pub`, read when needed (a dock added needs no restart).

    `dock_keys_dir` given as a bare name (no `/`) under systemd is a credential name: the unit's
    `LoadCredential=NAME:/etc/dock-agent/dock-keys` loads each `{client_id}.pub` of that
    directory as `$CREDENTIALS_DIRECTORY/NAME_{client_id}.pub`.
    """

    def __init__(self, directory: Path | str) -> None:
        text = str(directory)
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        self.directory = Path(cred_dir) if cred_dir and "/" not in text else Path(text)
        self.prefix = f"{text}_" if cred_dir and "/" not in text else ""
        self._cache: dict[str, tuple[tuple[int, int], Ed25519PublicKey]] = {}

    def key(self, client_id: str) -> Ed25519PublicKey | None:
        """The public key of `client_id`, or None when it has none (an unusable file is logged)."""
        if p.path_component_problem(client_id, p.MAX_CLIENT_ID_BYTES):
            return None
        path = self.directory / f"{self.prefix}{client_id}.pub"
        try:
            st = path.stat()
        except (OSError, ValueError):
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            key = keys.load_public(path)
        except keys.KeyFileError as exc:  # names the file, never a key
            logger.error("dock key unusable: %s", exc)
            return None
        if len(self._cache) >= _CACHED:
            self._cache.clear()
        self._cache[client_id] = (stamp, key)
        return key

    def _require(self, client_id: str) -> Ed25519PublicKey:
        key = self.key(client_id)
        if key is None:
            raise p.ProtocolError(p.NOT_AUTHORIZED, f"no key for client {client_id[:80]!r}")
        return key

    def check_init(self, client_id: str, init: p.Init, payload: bytes) -> None:
        """Refuse (0x87) an init whose `user_data.dock_sig` does not sign the whole payload."""
        key = self._require(client_id)
        if not init_signed(key, client_id, init.file_id, payload):
            raise p.ProtocolError(p.NOT_AUTHORIZED, "init: dock_sig missing or does not verify")

    def meta_signed(self, client_id: str, file_id: str, meta: p.FileMeta) -> bool:
        """Whether a stored init (as the dock sends it) carries the client's current signature."""
        key = self.key(client_id)
        try:  # an old receiver's stored init may hold anything a client sent
            payload = p.init_payload(meta)
        except (ValueError, TypeError, RecursionError):
            return False
        return key is not None and init_signed(key, client_id, file_id, payload)

    def check_segment(
        self,
        client_id: str,
        seg: p.Segment,
        data: bytes | bytearray,
        props: Any,
        digest: str | None = None,
    ) -> None:
        """Refuse (0x87) a segment whose `dock_sig` user property does not sign it.

        `digest`: the segment's SHA-256 when already checked against `data` (else hashed here).
        """
        key = self._require(client_id)
        sig = segment_signature(props)
        sha = digest or p.sha256_hex(data)
        message = signatures.segment_digest_message(client_id, seg.file_id, seg.offset, sha)
        if not signatures.verify(key, message, sig):
            raise p.ProtocolError(p.NOT_AUTHORIZED, "segment: dock_sig missing or does not verify")

    def segment_ok(
        self,
        client_id: str,
        seg: p.Segment,
        data: bytes | bytearray,
        props: Any,
        digest: str | None = None,
    ) -> bool:
        """`check_segment` as a yes or no."""
        try:
            self.check_segment(client_id, seg, data, props, digest)
        except p.ProtocolError:
            return False
        return True


def init_signed(key: Ed25519PublicKey, client_id: str, file_id: str, payload: bytes) -> bool:
    """Whether `payload` (an init's JSON) carries `key`'s `dock_sig` over all of it. Never raises."""
    try:
        body = json.loads(payload.decode("utf-8"))
        user_data = body.get("user_data") if isinstance(body, dict) else None
        if not isinstance(user_data, dict):
            return False
        message = signatures.init_message(client_id, file_id, body)
    except (UnicodeError, ValueError, RecursionError, TypeError):
        return False
    return signatures.verify(key, message, user_data.get(SIG_PROPERTY))


def segment_signature(props: Any) -> str | None:
    """The `dock_sig` user property of a message, if exactly one string is given."""
    pairs = getattr(props, "UserProperty", None)
    if not isinstance(pairs, list):
        return None
    found = [
        v
        for pair in pairs
        if isinstance(pair, tuple) and len(pair) == 2
        for k, v in [pair]
        if k == SIG_PROPERTY
    ]
    return found[0] if len(found) == 1 and isinstance(found[0], str) else None


def fin_nonce(payload: bytes) -> str | None:
    """The nonce of a fin (`{"nonce": 32 lowercase hex}`); None for an empty payload (EMQX).

    Anything else is refused: a fin payload is either empty or exactly that.
    """
    if not payload:
        return None
    bad = p.ProtocolError(p.PAYLOAD_FORMAT_INVALID, 'fin payload: expected {"nonce": 32 hex}')
    if len(payload) > MAX_FIN_PAYLOAD:
        raise bad
    try:
        body = json.loads(payload.decode("ascii"))
    except (UnicodeError, ValueError, RecursionError):
        raise bad from None
    nonce = body.get("nonce") if isinstance(body, dict) else None
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise bad
    return nonce


def receipt(key: Ed25519PrivateKey, client_id: str, fin: p.Fin, sha256: str, nonce: str) -> str:
    """Central's receipt for one fin attempt (SPEC 11)."""
    message = signatures.fin_message(client_id, fin.file_id, fin.size, sha256, nonce)
    return signatures.sign(key, message)


def sign_refusal(
    exc: p.ProtocolError, key: Ed25519PrivateKey, client_id: str, fin: p.Fin, nonce: str | None
) -> None:
    """Put central's signature on its refusal of one fin attempt (`exc.receipt`; SPEC 11).

    The dock holds an unproved failure up to ack_timeout_s each round (any broker client can
    send one); a refusal signed over the attempt's nonce it acts on at once.
    """
    if nonce is not None:
        message = signatures.refusal_message(
            client_id, fin.file_id, fin.size, exc.reason_code, nonce
        )
        exc.receipt = signatures.sign(key, message)  # type: ignore[attr-defined]


def signed(
    resp: p.Response, key: Ed25519PrivateKey, client_id: str, msg: Any, correlation: bytes | None
) -> p.Response:
    """`resp` with central's signature when it refuses an init or a segment (SPEC 11).

    Signed over that exact command (topic, payload, `dock_sig` property) and its correlation
    data, so the dock acts on it at once; a success, an already signed fin refusal or a
    command without correlation data is returned as it is.
    """
    if resp.ok or resp.receipt is not None or not isinstance(correlation, bytes):
        return resp
    dock_sig = segment_signature(getattr(msg, "properties", None)) or ""
    message = signatures.refused_message(
        client_id,
        msg.topic,
        p.sha256_hex(bytes(msg.payload)),
        dock_sig,
        resp.reason_code,
        correlation,
    )
    return replace(resp, receipt=signatures.sign(key, message))


def load_receiver_key(path: Path, comment: str) -> Ed25519PrivateKey:
    """The receiver's key, made (0600, .pub beside) at first start; KeyFileError when unusable."""
    return keys.key_pair(path, comment, "the receiver's", "every dock")


def old_key_files(directory: Path) -> list[str]:
    """HMAC-era `{client_id}.key` files in dock_keys_dir (no longer read)."""
    try:
        return sorted(f.name for f in directory.glob("*.key"))
    except OSError:
        return []
