"""SPEC 11 at the receiver, on a real Mosquitto: signed inits only, receipts on every fin."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.transfer import protocol as p
from agent.transfer import trust
from agent.transfer.receiver.server import Receiver
from tests.broker import Broker
from tests.emqx.clients import emqx_ft_client
from tests.transfer_kit import RawSender, files_under, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def keyed(broker: Broker, store: Path, tmp_path: Path) -> Iterator[Receiver]:
    """A receiver that holds dock-a's key only, with unidentified = "store" (still refused)."""
    keys = tmp_path / "dock-keys"
    keys.mkdir()
    (keys / "dock-a.key").write_text(KEY_A.hex() + "\n")
    (keys / "dock-broken.key").write_text("not a key")
    rx = start_receiver(broker, store, dock_keys_dir=keys, unidentified="store")
    yield rx
    rx.stop()


def signed(key: bytes, client_id: str, fid: str, size: int) -> dict[str, str]:
    return {"dock_sig": trust.init_signature(key, client_id, fid, size, fid)}


def test_init_claiming_a_dock_without_a_valid_dock_sig_stores_nothing(
    broker: Broker, keyed: Receiver, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    impostor = RawSender(broker, "dock-a")  # claims dock-a's response topic, lacks its key
    try:
        data = os.urandom(5000)
        fid = p.sha256_hex(data)
        for user_data in (
            {},
            {"dock_sig": "0" * 64},
            signed(KEY_B, "dock-a", fid, len(data)),
            signed(KEY_A, "dock-b", fid, len(data)),  # dock-a's key, another client's message
            signed(KEY_A, "dock-a", fid, len(data) + 1),
            {"dock_sig": 5},
        ):
            resp = impostor.init(fid, "clip.MP4", len(data), user_data)
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED, user_data
            seg = impostor.segment(fid, 0, data)
            assert seg is not None and not seg.ok
            fin = impostor.fin(fid, len(data))
            assert fin is not None and not fin.ok and fin.receipt is None
        assert files_under(store) == [] and not (store / "dock-a").exists()
    finally:
        impostor.close()
    for client_id in ("dock-b", "dock-broken"):  # no key, or an unreadable one: refused too
        other = RawSender(broker, client_id)
        try:
            fid = p.sha256_hex(b"y")
            resp = other.init(fid, "y.MP4", 1, signed(KEY_A, client_id, fid, 1))
            assert resp is not None and resp.reason_code == p.NOT_AUTHORIZED
        finally:
            other.close()
    assert files_under(store) == []
    assert not any(KEY_A.hex() in m or KEY_B.hex() in m for m in caplog.messages)


def test_signed_transfer_completes_and_every_fin_carries_a_receipt(
    broker: Broker, keyed: Receiver, store: Path
) -> None:
    dock = RawSender(broker, "dock-a")
    try:
        data = os.urandom(9000)
        fid = p.sha256_hex(data)
        user_data = {"sha256": fid, **signed(KEY_A, "dock-a", fid, len(data))}
        assert dock.init(fid, "clip.MP4", len(data), user_data).ok  # type: ignore[union-attr]
        assert dock.segment(fid, 0, data).ok
        expected = trust.fin_receipt(KEY_A, "dock-a", fid, len(data), fid)
        for _ in range(2):  # the first fin and a repeated one (its answer was lost)
            fin = dock.fin(fid, len(data))
            assert fin is not None and fin.ok and trust.valid(expected, fin.receipt)
        assert (store / "dock-a" / fid / "clip.MP4").read_bytes() == data
        wrong = dock.fin(fid, len(data), checksum="1" * 64)
        assert wrong is not None and not wrong.ok and wrong.receipt is None
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
    time.sleep(0.3)
    assert files_under(store) == []
