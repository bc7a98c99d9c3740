"""The dock's signatures on what it sends, and its check of central's receipts (SPEC 11)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.transfer import protocol as p
from agent.trust import signatures

logger = logging.getLogger(__name__)

NONCE_BYTES = 16  # 32 lowercase hex digits in the fin's payload
SIG_PROPERTY = "dock_sig"


class Signer:
    """Signs one client's inits and segments; makes fin nonces and checks receipts against them.

    `central_key` None with `receipts` on: central's key is not enrolled, so any success counts
    (the dock then holds recorder deletions, SPEC 11). `receipts` off (EMQX): fins carry no
    nonce, answers carry no receipt.
    """

    def __init__(
        self,
        client_id: str,
        key: Ed25519PrivateKey,
        central_key: Ed25519PublicKey | None = None,
        receipts: bool = True,
    ) -> None:
        self.client_id = client_id
        self._key = key
        self._public = key.public_key()
        self.central_key = central_key
        self.receipts = receipts

    def sign_meta(self, file_id: str, meta: p.FileMeta) -> p.FileMeta:
        """`meta` with `user_data.dock_sig` over the whole init payload."""
        data = {k: v for k, v in meta.user_data.items() if k != SIG_PROPERTY}
        unsigned = replace(meta, user_data=data)
        body = json.loads(p.init_payload(unsigned))
        sig = signatures.sign(self._key, signatures.init_message(self.client_id, file_id, body))
        return replace(unsigned, user_data=data | {SIG_PROPERTY: sig})

    def init_verifies(self, file_id: str, payload: bytes) -> bool:
        """Whether a saved init payload carries this key's signature (HMAC-era ones do not)."""
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):
            return False
        user_data = body.get("user_data") if isinstance(body, dict) else None
        if not isinstance(user_data, dict):
            return False
        message = signatures.init_message(self.client_id, file_id, body)
        return signatures.verify(self._public, message, user_data.get(SIG_PROPERTY))

    def stale_init(self, file_id: str, payload: bytes | None) -> bool:
        """A saved init this key did not sign (HMAC-era, or an earlier key): to be sent afresh."""
        return payload is not None and not self.init_verifies(file_id, payload)

    def segment_property(
        self, file_id: str, offset: int, data: bytes, digest: str | None = None
    ) -> tuple[str, str]:
        """The MQTT user property that signs one segment (`digest`: its SHA-256, if known)."""
        sha = digest or p.sha256_hex(data)
        message = signatures.segment_digest_message(self.client_id, file_id, offset, sha)
        return SIG_PROPERTY, signatures.sign(self._key, message)

    def fin_payload(self) -> tuple[bytes, str]:
        """A fin's payload and its fresh nonce ("" and no payload without receipts)."""
        if not self.receipts:
            return b"", ""
        nonce = secrets.token_hex(NONCE_BYTES)
        return json.dumps({"nonce": nonce}).encode("ascii"), nonce

    @property
    def holds_failures(self) -> bool:
        """Whether a failure answer waits for a proved success first (receipts can be checked).

        Anyone on the broker can answer a command; with receipts only the receiver can prove
        a success, so a failure it did not send must not cost the clip a resend or a round.
        Central's refusals it signed (`refused`, `segment_refused`, `judge_fin`) count at once.
        """
        return self.receipts and self.central_key is not None

    def judge(self, answer: Any) -> bool | None:
        """An answer to any other command: act on it, or hold a failure (see holds_failures).

        A held failure that `refused` shows is central's own is then acted on at once.
        """
        return True if answer.ok or not self.holds_failures else None

    def judge_fin(self, file_id: str, meta: p.FileMeta, nonce: str, answer: Any) -> bool | None:
        """A fin answer: act on it (True), ignore it (False: forged), or hold it (None: failure)."""
        if not answer.ok:
            held = self.holds_failures and not self.refusal_holds(file_id, meta, nonce, answer)
            return None if held else True
        if self.receipt_holds(file_id, meta, nonce, answer):
            return True
        logger.warning(
            "fin of %s answered success without a valid receipt (%s); ignored, still listening",
            file_id,
            "none" if getattr(answer, "receipt", None) is None else "wrong",
        )
        return False

    def refusal_holds(self, file_id: str, meta: p.FileMeta, nonce: str, answer: Any) -> bool:
        """Whether a failed fin answer carries central's signature over this refusal (and nonce)."""
        if self.central_key is None:
            return False
        message = signatures.refusal_message(
            self.client_id, file_id, meta.size, answer.reason_code, nonce
        )
        return signatures.verify(self.central_key, message, getattr(answer, "receipt", None))

    def refused(self, topic: str, payload: bytes, got: tuple[bytes, Any]) -> bool:
        """Whether a failed answer `got` (correlation, response) to a command without a
        `dock_sig` property (init, fin) is central's signed refusal of that command."""
        return self._proves_refusal(topic, p.sha256_hex(payload), "", got)

    def segment_refused(
        self,
        prefix: str,
        file_id: str,
        offset: int,
        read: Callable[[], bytes],
        got: tuple[bytes, Any],
    ) -> bool:
        """`refused` for the segment at `offset`, its bytes read again (`read`) only when the
        answer carries a receipt; its topic and `dock_sig` are made again as it was sent."""
        if self.central_key is None or getattr(got[1], "receipt", None) is None:
            return False
        data = read()
        digest = p.sha256_hex(data)
        topic = p.segment_topic(prefix, file_id, offset, digest)
        sig = self.segment_property(file_id, offset, data, digest)[1]
        return self._proves_refusal(topic, digest, sig, got)

    def _proves_refusal(
        self, topic: str, payload_sha256: str, dock_sig: str, got: tuple[bytes, Any]
    ) -> bool:
        """Central's signature over its refusal of what this dock published under `got[0]`.

        A refusal of any other command (a copy a broker client altered, another publish) does
        not verify: it is held like any unproved failure.
        """
        correlation, answer = got
        receipt = getattr(answer, "receipt", None)
        if self.central_key is None or answer.ok or not isinstance(receipt, str):
            return False
        message = signatures.refused_message(
            self.client_id, topic, payload_sha256, dock_sig, answer.reason_code, correlation
        )
        return signatures.verify(self.central_key, message, receipt)

    def receipt_holds(self, file_id: str, meta: p.FileMeta, nonce: str, answer: Any) -> bool:
        """Whether a successful fin answer proves central holds the file (for this nonce)."""
        if not self.receipts or self.central_key is None:
            return True
        message = signatures.fin_message(self.client_id, file_id, meta.size, meta.checksum, nonce)
        return signatures.verify(self.central_key, message, getattr(answer, "receipt", None))
