"""`ack_mode = "puback"` (EMQX before 5.3.2): answers are PUBACK reason codes, here from Mosquitto.

Mosquitto's PUBACK means only that the broker took the message, which is why SPEC 7.1 forbids
this mode on Mosquitto: the first test shows a send "succeeding" with nobody receiving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.transfer.sender import FileSender, SendSettings, TransferFailed
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.transfer_kit import close, dock_connection, random_file

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

PUBACK = SendSettings(segment_bytes=65536, max_inflight=8, ack_timeout_s=2.0, ack_mode="puback")


def test_puback_codes_are_the_answers(broker_plain: Broker, tmp_path: Path) -> None:
    client = link = dock_connection(broker_plain, "dock-01")
    try:
        src = tmp_path / "clip.MP4"
        fid = random_file(src, 20 * 65536 + 3)
        result = FileSender(link, "dock-01", tmp_path / "state", PUBACK).send(
            src, fid, "clip.MP4", 20 * 65536 + 3, {}
        )
        assert (result.segments_sent, result.fins_sent, result.rounds) == (21, 1, 1)
        assert list((tmp_path / "state").glob("*.json")) == []
    finally:
        close(client)


def test_a_refusing_puback_fails_the_send(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite $file-response/#\n")  # $file/# not allowed: PUBACK 0x87
    with running_broker(tmp_path / "broker", extra_config=f"acl_file {acl}\n") as b:
        client = link = dock_connection(b, "dock-01")
        try:
            src = tmp_path / "clip.MP4"
            fid = random_file(src, 65536)
            sender = FileSender(link, "dock-01", tmp_path / "state", PUBACK)
            with pytest.raises(TransferFailed, match="reason code 135"):
                sender.send(src, fid, "clip.MP4", 65536, {})
        finally:
            close(client)


@pytest.fixture
def broker_plain(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "plain") as b:
        yield b
