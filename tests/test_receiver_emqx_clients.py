"""`dock-agent receive` serves clients written for EMQX (SPEC 7.1), on a real Mosquitto.

The clients are tests/emqx/clients.py: EMQX's two sample clients on the wire (no Response
Topic, free-form file ids, checksum only in the init or only in the fin, `$file-async/`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.transfer import protocol as p
from agent.transfer.receiver.escape import UNIDENTIFIED_DIR
from tests.broker import Broker
from tests.emqx.clients import emqx_ft_client, examples_client
from tests.transfer_kit import RawSender, files_under, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def barrier(broker: Broker) -> None:
    """Returns once the receiver has read every command published before it."""
    raw = RawSender(broker, "barrier")
    try:
        assert raw.command("$file/barrier/abort") is not None
    finally:
        raw.close()


def sample(tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def test_both_sample_clients_are_stored_intact_with_unidentified_store(
    broker: Broker, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    rx = start_receiver(broker, store, unidentified="store")
    try:
        a, a_data = sample(tmp_path, "a.bin", 5 * 1024 + 17)  # checksum only in the fin
        examples_client(broker.host, broker.port, a, "my-file-001")
        b, b_data = sample(tmp_path, "b.bin", 3000)  # checksum only in the init, fin bare
        emqx_ft_client(broker.host, broker.port, b, "my file", "ft-1", file_name="b.bin")
        c, c_data = sample(tmp_path, "c.bin", 2500)  # $file-async/
        emqx_ft_client(
            broker.host, broker.port, c, "x:y%z", "ft-2", file_name="c.bin", use_async=True
        )
        held = store / UNIDENTIFIED_DIR
        expected = {
            held / "my-file-001" / "a.bin": a_data,
            held / "my file" / "b.bin": b_data,
            held / "x%3Ay%25z" / "c.bin": c_data,
        }
        assert wait_for(lambda: all((d.parent / "manifest.json").is_file() for d in expected))
        for path, data in expected.items():
            assert path.read_bytes() == data, path
            assert json.loads((path.parent / "manifest.json").read_text()) == {}
    finally:
        rx.stop()


def test_prefixes_mixed_within_one_transfer_and_abort_answered(
    broker: Broker, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    rx = start_receiver(broker, store)
    raw = RawSender(broker, "emqx-style")
    try:
        data = os.urandom(6000)
        init = p.init_payload(p.FileMeta("mixed.bin", len(data), ""))  # no checksum at all
        assert raw.command("$file-async/mixed-1/init", init).ok  # type: ignore[union-attr]
        assert raw.command("$file/mixed-1/0", data[:4000]).ok  # type: ignore[union-attr]
        assert raw.command("$file-async/mixed-1/4000", data[4000:]).ok  # type: ignore[union-attr]
        assert raw.command("$file/mixed-1/abort").ok, "abort: success, as EMQX"  # type: ignore[union-attr]
        fin = raw.command(f"$file-async/mixed-1/fin/{len(data)}")
        assert fin is not None and fin.ok
        assert (store / "emqx-style" / "mixed-1" / "mixed.bin").read_bytes() == data
    finally:
        raw.close()
        rx.stop()


def test_sample_clients_refused_with_one_log_line_each_by_default(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    rx = start_receiver(broker, store)
    try:
        with caplog.at_level(logging.WARNING, logger="agent.transfer.receiver"):
            a, _ = sample(tmp_path, "a.bin", 8 * 1024)  # init, 8 segments, fin: 10 messages
            examples_client(broker.host, broker.port, a, "my-file-001")
            b, _ = sample(tmp_path, "b.bin", 6 * 1024)
            emqx_ft_client(broker.host, broker.port, b, "ft-file", "ft-1", use_async=True)
            barrier(broker)
        lines = [m for m in caplog.messages if "no Response Topic" in m]
        assert len([m for m in lines if "my-file-001" in m]) == 1, lines
        assert len([m for m in lines if "ft-file" in m]) == 1, lines
        assert "unidentified" in lines[0], "the line says how to keep such files"
        assert files_under(store) == []
    finally:
        rx.stop()
