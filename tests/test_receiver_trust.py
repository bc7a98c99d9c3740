"""SPEC 11 at the receiver, on a real Mosquitto: each attack of issue 21 ends in a refusal."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.transfer import protocol as p
from agent.transfer.receiver.server import Receiver
from agent.transfer.signing import Signer
from agent.trust import keys, signatures
from tests.broker import Broker
from tests.dock import wait_for
from tests.emqx.clients import emqx_ft_client
from tests.transfer_kit import RawSender, dock_connection, files_under, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker

KEY_A = Ed25519PrivateKey.generate()
KEY_B = Ed25519PrivateKey.generate()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def keyed(broker: Broker, store: Path, tmp_path: Path) -> Iterator[Receiver]:
    """dock-a and dock-b enrolled, a broken .pub for dock-broken; unidentified "store" (refused)."""
    keys_dir = tmp_path / "dock-keys"
    keys_dir.mkdir()
    keys.write_public(keys_dir / "dock-a.pub", KEY_A.public_key(), "dock-a")
    keys.write_public(keys_dir / "dock-b.pub", KEY_B.public_key(), "dock-b")
    (keys_dir / "dock-broken.pub").write_text("not a key")
    rx = start_receiver(
        broker, store, dock_keys_dir=keys_dir, unidentified="store", max_partials_per_client=16
    )
    yield rx
    assert rx.healthy(), "the receiver is alive after every hostile message"
    rx.stop()


def receiver_pub(store: Path) -> keys.Ed25519PublicKey:
    return keys.load_public(store.parent / "receiver.pub")


def test_an_init_whose_dock_sig_is_not_hex_leaves_the_receiver_serving(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    """Issue 21: `"é"` raised TypeError in the HMAC compare, the worker died, receive exited 1."""
    attacker = RawSender(broker, "it", reply_as="dock-a")
    data = os.urandom(3000)
    fid = p.sha256_hex(data)
    try:
        for sig in ("é", "é" * 128, 5, None, ["x"], {"a": 1}, "0" * 128, "zz" * 64, 10**40):
            resp = attacker.init(fid, "clip.MP4", len(data), {"dock_sig": sig})
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED, sig
    finally:
        attacker.close()
    assert keyed.healthy()
    dock = RawSender(broker, "dock-a", key=KEY_A)
    try:
        assert dock.init(fid, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
        assert dock.segment(fid, 0, data).ok
        assert dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
    finally:
        dock.close()
    assert (store / "dock-a" / fid / "clip.MP4").read_bytes() == data


def test_a_dock_login_cannot_plant_a_clip_in_another_docks_name(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    data = os.urandom(5000)
    fid = p.sha256_hex(data)
    for login, key in (("dock-b", KEY_B), ("it", None), ("dock-b", Ed25519PrivateKey.generate())):
        impostor = RawSender(broker, login, key=key, reply_as="dock-a")
        try:
            resp = impostor.init(fid, "clip.MP4", len(data), {"officer_id": "099999"})
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED
            seg = impostor.segment(fid, 0, data)
            assert seg is not None and seg.reason_code == p.NOT_AUTHORIZED
            fin = impostor.fin(fid, len(data))
            assert fin is not None and not fin.ok
            proof = signatures.fin_message("dock-a", fid, len(data), fid, impostor.last_nonce)
            assert not signatures.verify(receiver_pub(store), proof, fin.receipt), "no success"
        finally:
            impostor.close()
    for client_id in ("dock-c", "dock-broken"):  # no key, or an unusable one: refused too
        other = RawSender(broker, client_id, key=KEY_A)
        try:
            resp = other.init(fid, "clip.MP4", len(data))
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED
        finally:
            other.close()
    assert files_under(store) == []


def test_a_signed_init_with_another_name_or_officer_is_refused(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    """Issue 21: dock_sig covered the id, size and checksum only; now the whole init."""
    data = os.urandom(4000)
    fid = p.sha256_hex(data)
    signer = Signer("dock-a", KEY_A)
    genuine = signer.sign_meta(
        fid, p.FileMeta("ZFY0012345_001234.MP4", len(data), fid, user_data={"officer_id": "001234"})
    )
    forged_user = genuine.user_data | {"officer_id": "099999"}
    attacker = RawSender(broker, "it", reply_as="dock-a")
    try:
        for meta in (
            p.FileMeta("ZFY0099999_099999.MP4", len(data), fid, user_data=genuine.user_data),
            p.FileMeta(genuine.name, len(data), fid, user_data=forged_user),
            p.FileMeta(genuine.name, len(data), fid, expire_at=1, user_data=genuine.user_data),
        ):
            resp = attacker.command(p.init_topic("$file", fid), p.init_payload(meta))
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED, meta
        dock = RawSender(broker, "dock-a", key=KEY_A)
        try:  # the dock's own init is not spoiled (issue 21: it got filemeta_conflict)
            resp = dock.command(p.init_topic("$file", fid), p.init_payload(genuine))
            assert resp is not None and resp.ok
            assert dock.segment(fid, 0, data).ok and dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
        finally:
            dock.close()
    finally:
        attacker.close()
    manifest = json.loads((store / "dock-a" / fid / "manifest.json").read_text())
    assert manifest["officer_id"] == "001234"
    assert sorted(files_under(store)) == [
        f"dock-a/{fid}/ZFY0012345_001234.MP4",
        f"dock-a/{fid}/manifest.json",
    ]


def test_unverified_inits_in_a_docks_name_do_not_fill_its_quota(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    attacker = RawSender(broker, "it", reply_as="dock-a")
    try:
        for i in range(20):
            fid = p.sha256_hex(f"junk {i}".encode())
            resp = attacker.init(fid, f"j{i}.MP4", 1 << 40, {"dock_sig": "0" * 128})
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED
    finally:
        attacker.close()
    dock = RawSender(broker, "dock-a", key=KEY_A)
    try:
        data = os.urandom(2000)
        fid = p.sha256_hex(data)
        resp = dock.init(fid, "real.MP4", len(data))
        assert resp is not None and resp.ok, resp  # not 0x97 "quota exceeded"
        assert dock.segment(fid, 0, data).ok and dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
    finally:
        dock.close()
    assert files_under(store) == [f"dock-a/{fid}/manifest.json", f"dock-a/{fid}/real.MP4"]


def test_refused_segments_never_touch_the_stored_ranges(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    data = os.urandom(3 * 4096)
    fid = p.sha256_hex(data)
    dock = RawSender(broker, "dock-a", key=KEY_A)
    attacker = RawSender(broker, "it", reply_as="dock-a")
    try:
        assert dock.init(fid, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
        assert dock.segment(fid, 0, data[:4096]).ok
        junk = os.urandom(4096)
        other_sig = Signer("dock-a", KEY_B).segment_property(fid, 8192, junk)[1]
        moved_sig = Signer("dock-a", KEY_A).segment_property(fid, 4096, junk)[1]  # other offset
        for offset, sig in (
            (0, None),
            (8192, None),
            (8192, other_sig),
            (8192, moved_sig),
            (8192, "é"),
            (0, "0" * 128),
        ):
            resp = attacker.segment(fid, offset, junk, sig=sig)
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED, (offset, sig)
        assert dock.segment(fid, 4096, data[4096:8192]).ok
        assert dock.segment(fid, 8192, data[8192:]).ok
        fin = dock.fin(fid, len(data))
        assert fin is not None and fin.ok, fin
    finally:
        dock.close()
        attacker.close()
    assert (store / "dock-a" / fid / "clip.MP4").read_bytes() == data


def test_every_fin_gets_a_receipt_over_its_own_nonce_so_none_replays(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    dock = RawSender(broker, "dock-a", key=KEY_A)
    central = receiver_pub(store)
    try:
        data = os.urandom(9000)
        fid = p.sha256_hex(data)
        assert dock.init(fid, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
        assert dock.segment(fid, 0, data).ok
        receipts = []
        for _ in range(2):  # the first fin and a repeated one (its answer was lost)
            fin = dock.fin(fid, len(data))
            assert fin is not None and fin.ok
            message = signatures.fin_message("dock-a", fid, len(data), fid, dock.last_nonce)
            assert signatures.verify(central, message, fin.receipt)
            receipts.append((dock.last_nonce, fin.receipt))
        (n1, r1), (n2, r2) = receipts
        assert n1 != n2 and r1 != r2
        later = signatures.fin_message("dock-a", fid, len(data), fid, n2)
        assert not signatures.verify(central, later, r1), "an old receipt never answers a new fin"
        assert (store / "dock-a" / fid / "clip.MP4").read_bytes() == data
        wrong = dock.fin(fid, len(data), checksum="1" * 64)
        assert wrong is not None and not wrong.ok
        success = signatures.fin_message("dock-a", fid, len(data), fid, dock.last_nonce)
        assert not signatures.verify(central, success, wrong.receipt)
        refused = signatures.refusal_message(
            "dock-a", fid, len(data), wrong.reason_code, dock.last_nonce
        )
        assert signatures.verify(central, refused, wrong.receipt), "the refusal is central's own"
        bad = dock.command(p.fin_topic("$file", fid, len(data), fid), b'{"nonce": "\xc3"}')
        assert bad is not None and bad.reason_code == p.PAYLOAD_FORMAT_INVALID
    finally:
        dock.close()


def test_unidentified_transfers_are_refused_with_keys_even_when_store_is_set(
    broker: Broker, keyed: Receiver, store: Path, tmp_path: Path
) -> None:
    src = tmp_path / "sample.bin"
    src.write_bytes(os.urandom(3000))
    emqx_ft_client(broker.host, broker.port, src, "my-file-001", "sample", file_name="s.bin")
    barrier = RawSender(broker, "dock-a")  # answered after the sample's commands were read
    try:
        assert barrier.command("$file/x/abort") is not None
    finally:
        barrier.close()
    time.sleep(0.3)  # no-event wait: the barrier's answer came after the sample's commands
    assert files_under(store) == []


def test_injection_on_the_last_range_while_the_dock_sends_cannot_stop_the_clip(
    broker: Broker, keyed: Receiver, store: Path, tmp_path: Path
) -> None:
    """Issue 21: random bytes for the clip's last range every 50 ms made every fin fail."""
    from agent.transfer.sender import FileSender, SendSettings
    from tests.transfer_kit import close, random_file

    size = 8 * 65536 + 1234
    src = tmp_path / "clip.MP4"
    fid = random_file(src, size)
    last = 8 * 65536
    stop = threading.Event()
    sent = [0]

    def inject() -> None:
        attacker = RawSender(broker, "it", reply_as="dock-a")
        try:
            while not stop.is_set():
                attacker.segment(fid, last, os.urandom(size - last), timeout=0.2)
                sent[0] += 1
                stop.wait(0.05)
        finally:
            attacker.close()

    injector = threading.Thread(target=inject)
    injector.start()
    client = link = dock_connection(broker, "dock-a")
    # Paced (256 KiB/s: about a second), so that the injection goes on while the dock sends.
    settings = SendSettings(
        segment_bytes=65536, ack_timeout_s=2.0, fin_timeout_s=5.0, rate_limit_bytes_per_s=1 << 18
    )
    try:
        wait_for(lambda: sent[0] > 0, 10, "the injection under way")
        sender = FileSender(link, "dock-a", tmp_path / "state", settings, Signer("dock-a", KEY_A))
        result = sender.send(src, fid, "clip.MP4", size, {})
        assert result.rounds == 1, "the first fin succeeded"
    finally:
        stop.set()
        injector.join(10)
        close(client)
    assert sent[0] >= 3, "the injection kept going while the dock sent"
    assert (store / "dock-a" / fid / "clip.MP4").read_bytes() == src.read_bytes()
