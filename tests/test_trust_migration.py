"""Upgrading from HMAC transfer keys (issue 21): transfers in flight are sent afresh, none is stuck;
and a receipt recorded once never acks a later fin."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.transfer.receiver.server import Receiver
from agent.transfer.sender import FileSender, ReceiptInvalid, SendSettings, TransferInterrupted
from agent.transfer.signing import Signer
from agent.trust import keys
from tests.broker import Broker
from tests.test_receiver_expiry import CancelAfter
from tests.transfer_kit import close, connect, dock_connection, random_file, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker

SEG = 65536
SETTINGS = SendSettings(segment_bytes=SEG, ack_timeout_s=2.0, fin_timeout_s=3.0, max_tries=2)
HMAC_SIG = {"dock_sig": "ab" * 32}  # what an HMAC-era dock put in user_data


@pytest.fixture
def dock_key(tmp_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "dock-keys").mkdir()
    keys.write_public(tmp_path / "dock-keys" / "dock-01.pub", key.public_key(), "dock-01")
    return key


def keyed_receiver(broker: Broker, store: Path, tmp_path: Path) -> Receiver:
    return start_receiver(broker, store, dock_keys_dir=tmp_path / "dock-keys")


def central(store: Path) -> keys.Ed25519PublicKey:
    return keys.load_public(store.parent / "receiver.pub")


def test_a_transfer_half_sent_under_hmac_is_sent_afresh_after_the_upgrade(
    broker: Broker, tmp_path: Path, dock_key: Ed25519PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 10 * SEG + 77)
    old = start_receiver(broker, store)  # before the upgrade: this receiver took HMAC inits
    client = link = dock_connection(broker, "dock-01")
    try:
        cancel = threading.Event()
        with pytest.raises(TransferInterrupted):
            slow = replace(SETTINGS, max_inflight=1)  # answers come in before the cut
            FileSender(CancelAfter(link, 5, cancel), "dock-01", state, slow).send(
                src, fid, "clip.MP4", src.stat().st_size, HMAC_SIG, cancel
            )
        old.stop()
        saved = json.loads(next(state.glob("*.json")).read_text())
        assert saved["acked"] and json.loads(saved["init"])["user_data"] == HMAC_SIG
        assert (store / "dock-01" / fid / ".partial").is_dir(), "central holds the old partial"
        rx = keyed_receiver(broker, store, tmp_path)
        try:
            signer = Signer("dock-01", dock_key, central(store))
            with caplog.at_level(logging.WARNING, logger="agent.transfer.sender"):
                result = FileSender(link, "dock-01", state, SETTINGS, signer).send(
                    src, fid, "clip.MP4", src.stat().st_size, {}
                )
        finally:
            rx.stop()
    finally:
        close(client)
    assert result.skipped == 0 and result.rounds == 1, "every segment again, one round"
    assert "saved init not signed by this key; sent afresh" in caplog.text
    assert (store / "dock-01" / fid / "clip.MP4").read_bytes() == src.read_bytes()


def test_a_clip_held_since_hmac_days_is_acked_again_with_a_receipt(
    broker: Broker, tmp_path: Path, dock_key: Ed25519PrivateKey
) -> None:
    """A resync (or a crash before the ack was recorded) of a clip central got under HMAC."""
    store, state = tmp_path / "store", tmp_path / "state"
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 3 * SEG)
    old = start_receiver(broker, store)
    client = link = dock_connection(broker, "dock-01")
    try:
        FileSender(link, "dock-01", state, SETTINGS).send(src, fid, "clip.MP4", 3 * SEG, HMAC_SIG)
        old.stop()
        rx = keyed_receiver(broker, store, tmp_path)
        try:
            signer = Signer("dock-01", dock_key, central(store))
            result = FileSender(link, "dock-01", state, SETTINGS, signer).send(
                src, fid, "clip.MP4", 3 * SEG, {}
            )
        finally:
            rx.stop()
    finally:
        close(client)
    assert result.forged == 0 and result.rounds == 1
    assert (store / "dock-01" / fid / "clip.MP4").read_bytes() == src.read_bytes()


def test_a_replayed_receipt_does_not_ack_a_later_fin(
    broker: Broker, tmp_path: Path, dock_key: Ed25519PrivateKey
) -> None:
    """Issue 21: a receipt recorded once answered a later resync after central lost the file."""
    from tests.test_sync_trust import Sniffer

    store, state = tmp_path / "store", tmp_path / "state"
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 2 * SEG)
    recorded: queue.Queue[bytes] = queue.Queue()
    spy, spy_link = connect(broker, "spy")
    spy_link.subscribe("$file-response/dock-01", 1, lambda m: recorded.put(bytes(m.payload)))
    rx = keyed_receiver(broker, store, tmp_path)
    client = link = dock_connection(broker, "dock-01")
    try:
        signer = Signer("dock-01", dock_key, central(store))
        FileSender(link, "dock-01", state, signer=signer, settings=SETTINGS).send(
            src, fid, "clip.MP4", 2 * SEG, {}
        )
        rx.stop()
        answers: list[bytes] = []  # the spy's copy of the fin's answer may come after the dock's
        while not any(json.loads(a).get("receipt") for a in answers):
            answers.append(recorded.get(timeout=5))
        genuine = answers[-1]
        forger = Sniffer(broker, replay=genuine)  # central lost the file; the forger replays
        try:
            with pytest.raises(ReceiptInvalid):
                FileSender(link, "dock-01", state, SETTINGS, signer).send(
                    src, fid, "clip.MP4", 2 * SEG, {}
                )
        finally:
            forger.close()
        assert forger.fins >= 1
    finally:
        close(client)
        close(spy)
