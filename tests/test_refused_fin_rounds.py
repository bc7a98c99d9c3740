"""A fin the receiver refuses costs the dock no wait, round after round (real Mosquitto, receiver).

Seen wiring the chain (SPEC 8.1): a refused custody chunk's rounds took ack_timeout_s (10 s)
each, the answer held for a proved success any broker client's failure could fake; the fork,
its probe from seq 1 and the alert took a minute, and a silent fin would cost fin_timeout_s
(330 s). The receiver now signs its refusal over the fin's nonce and the dock acts on it at
once. ack_timeout_s and fin_timeout_s stay at their defaults (10 s, 330 s) here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.chunk import Chunk, build_chunk
from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import FileSender, SendSettings, TransferFailed
from agent.transfer.signing import Signer
from agent.trust import keys, signatures
from tests.broker import Broker, mosquitto_binary
from tests.chain_kit import fill, rewrite
from tests.transfer_kit import close, dock_connection, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker
pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

DOCK = "dock-a"
KEY = Ed25519PrivateKey.generate()
SETTINGS = SendSettings(segment_bytes=4096)  # ack_timeout_s 10, fin_timeout_s 330, as shipped
PROMPT_S = 3.0  # a round's refusal, well under ack_timeout_s


class TimedSender(FileSender):
    """A FileSender that notes how long each fin took to be answered, and with what."""

    fins: list[tuple[float, p.Response | None]]

    def _fin(self, job):  # type: ignore[no-untyped-def]
        began = time.monotonic()
        answer = super()._fin(job)
        self.fins.append((time.monotonic() - began, answer))
        return answer


def test_only_centrals_refusal_over_this_fins_nonce_is_acted_on_at_once() -> None:
    """Pure: a refusal anyone could send is still held for a proved success (SPEC 11)."""
    central = Ed25519PrivateKey.generate()
    signer = Signer(DOCK, KEY, central.public_key())
    meta = p.FileMeta("c.jsonl", 100, "ab" * 32)

    def refusal(key: Ed25519PrivateKey, nonce: str, code: int = p.UNSPECIFIED_ERROR) -> p.Response:
        message = signatures.refusal_message(DOCK, meta.checksum, meta.size, code, nonce)
        sig = signatures.sign(key, message)
        return p.Response("t", 1, p.UNSPECIFIED_ERROR, "custody_fork", receipt=sig)

    nonce, other = "0" * 32, "1" * 32
    assert signer.judge_fin(meta.checksum, meta, nonce, refusal(central, nonce)) is True
    for forged in (
        refusal(central, other),  # an old refusal replayed
        refusal(central, nonce, p.NOT_AUTHORIZED),  # signed for another reason code
        refusal(Ed25519PrivateKey.generate(), nonce),  # not central's key
        p.Response("t", 1, p.UNSPECIFIED_ERROR, "custody_fork"),  # unsigned
    ):
        assert signer.judge_fin(meta.checksum, meta, nonce, forged) is None


@pytest.fixture
def receiver(broker: Broker, tmp_path: Path) -> Iterator[Receiver]:
    keys_dir = tmp_path / "dock-keys"
    keys_dir.mkdir()
    keys.write_public(keys_dir / f"{DOCK}.pub", KEY.public_key(), DOCK)
    rx = start_receiver(broker, tmp_path / "store", dock_keys_dir=keys_dir)
    yield rx
    assert rx.healthy()
    rx.stop()


def send(broker: Broker, tmp_path: Path, chunk: Chunk) -> TimedSender:
    """Send `chunk` as the dock does (signed, receipts checked); the sender, for its fins."""
    path = tmp_path / "out" / chunk.name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(chunk.data)
    central = keys.load_public(tmp_path / "receiver.pub")
    client = link = dock_connection(broker, DOCK)
    sender = TimedSender(link, DOCK, tmp_path / "state", SETTINGS, Signer(DOCK, KEY, central))
    sender.fins = []
    try:
        sender.send(path, chunk.file_id, chunk.name, len(chunk.data), chunk.user_data)
    except TransferFailed as exc:
        sender.fins.append((0.0, p.Response("", 0, p.UNSPECIFIED_ERROR, str(exc))))
    finally:
        close(client)
    return sender


def test_a_forked_chunks_fin_is_refused_promptly_in_every_round(
    broker: Broker, receiver: Receiver, tmp_path: Path
) -> None:
    log = tmp_path / "custody.jsonl"
    fill(log, 4)
    first = build_chunk(log, DOCK, KEY, 1)
    assert first is not None
    accepted = send(broker, tmp_path, first)
    assert [a.ok for _, a in accepted.fins if a is not None] == [True]
    rewrite(log, 2, file="renamed.MP4")
    fill(log, 2, start=4)
    fork = build_chunk(log, DOCK, KEY, 1)
    assert fork is not None and fork.file_id != first.file_id
    began = time.monotonic()
    refused = send(broker, tmp_path, fork)
    rounds, failure = refused.fins[:-1], refused.fins[-1][1]
    assert failure is not None and "fin failed after 3 rounds" in failure.reason_description
    assert len(rounds) == SETTINGS.max_rounds, rounds
    for took, answer in rounds:
        assert answer is not None, f"a fin went unanswered for {took:.0f} s"
        assert answer.reason_code == p.UNSPECIFIED_ERROR and "custody_fork" in (
            answer.reason_description
        )
        assert took < PROMPT_S, f"a refusal took {took:.1f} s"
    assert time.monotonic() - began < 3 * PROMPT_S


def test_a_forked_chain_is_refused_promptly_chunk_after_chunk(
    broker: Broker, receiver: Receiver, tmp_path: Path
) -> None:
    """As the daemon sends it: the fork, the probe from seq 1, the retry; one connection."""
    from agent.chain.upload import ChainUpload

    log = tmp_path / "data" / "custody.jsonl"
    log.parent.mkdir()
    fill(log, 4)
    central = keys.load_public(tmp_path / "receiver.pub")
    client = link = dock_connection(broker, DOCK)
    sender = TimedSender(link, DOCK, tmp_path / "state", SETTINGS, Signer(DOCK, KEY, central))
    sender.fins = []
    up = ChainUpload(log, DOCK, KEY, tmp_path / "data" / "transfer", sender.send)
    try:
        assert up.flush() == 1
        rewrite(log, 2, file="renamed.MP4")
        fill(log, 2, start=4)
        for _ in range(3):
            with pytest.raises(TransferFailed, match="custody_fork"):
                up.flush()
    finally:
        close(client)
    refusals = sender.fins[1:]
    assert len(refusals) == 4 * SETTINGS.max_rounds
    for took, answer in refusals:
        assert answer is not None, f"a fin went unanswered for {took:.0f} s"
        assert "custody_fork" in answer.reason_description
        assert took < PROMPT_S, f"a refusal took {took:.1f} s"
