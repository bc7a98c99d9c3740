"""The reference receiver against a real Mosquitto: store layout, refusals, durability, restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.schema import ConfigError
from agent.transfer import protocol as p
from agent.transfer.receiver.config import parse_receiver_config
from tests.broker import Broker
from tests.transfer_kit import RawSender, files_under, start_receiver

pytest_plugins = ["tests.transfer_kit"]  # fixtures: broker, receiver, dock

SEG = 4096


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def send_all(dock: RawSender, file_id: str, data: bytes, name: str = "clip.MP4") -> None:
    assert dock.init(file_id, name, len(data), {"sha256": file_id}).ok  # type: ignore[union-attr]
    for off in range(0, len(data), SEG):
        assert dock.segment(file_id, off, data[off : off + SEG]).ok


def test_file_arrives_with_manifest(dock: RawSender, store: Path) -> None:
    data = os.urandom(3 * SEG + 100)
    fid = p.sha256_hex(data)
    send_all(dock, fid, data)
    resp = dock.fin(fid, len(data))
    assert resp is not None and resp.ok and resp.topic == p.fin_topic("$file", fid, len(data), fid)
    held = store / "raw-dock" / fid
    assert (held / "clip.MP4").read_bytes() == data
    assert json.loads((held / "manifest.json").read_text()) == {"sha256": fid}
    assert files_under(store) == [f"raw-dock/{fid}/clip.MP4", f"raw-dock/{fid}/manifest.json"]
    assert (held / ".init.json").is_file(), "the first init, against which a re-init is checked"
    again = dock.fin(fid, len(data))
    assert again is not None and again.ok, "a fin for a file already held is idempotent"


def test_empty_file(dock: RawSender, store: Path) -> None:
    fid = p.sha256_hex(b"")
    assert dock.init(fid, "empty.WAV", 0).ok  # type: ignore[union-attr]
    assert dock.fin(fid, 0).ok  # type: ignore[union-attr]
    assert (store / "raw-dock" / fid / "empty.WAV").read_bytes() == b""


@pytest.mark.parametrize(
    "name",
    ["../../escape.MP4", "a/b.MP4", "a\\b.MP4", ".hidden", "x\x00.MP4", "y" * 300, "manifest.json"],
)
def test_escaping_names_refused(dock: RawSender, store: Path, name: str) -> None:
    fid = p.sha256_hex(b"x")
    resp = dock.init(fid, name, 1)
    assert resp is not None and not resp.ok and "name" in resp.reason_description
    keys = ["receiver.key", "receiver.pub"]  # the receiver's own key pair, made at its start
    assert files_under(store.parent) == keys


def test_free_form_file_ids_stay_inside_the_store_and_bad_client_ids_are_refused(
    dock: RawSender, store: Path
) -> None:
    """SPEC 7.1: any file id of at most 255 bytes, under an escaped name that cannot escape."""
    for fid, dirname in (("..", "%2E."), ("my-file-001", "my-file-001"), ("a:b%c", "a%3Ab%25c")):
        data = fid.encode()
        assert dock.command(
            f"$file/{fid}/init", p.init_payload(p.FileMeta("f.txt", len(data), ""))
        ).ok  # type: ignore[union-attr]
        assert dock.command(f"$file/{fid}/0", data).ok  # type: ignore[union-attr]
        assert dock.command(f"$file/{fid}/fin/{len(data)}").ok  # type: ignore[union-attr]
        assert (store / "raw-dock" / dirname / "f.txt").read_bytes() == data
    too_long = dock.command("$file/" + "x" * 256 + "/init", p.init_payload(p.FileMeta("a", 1, "")))
    assert too_long is not None and not too_long.ok
    fid = p.sha256_hex(b"x")
    escape = dock.command(
        p.init_topic("$file", fid),
        p.init_payload(p.FileMeta("a", 1, fid)),
        reply_to="$file-response/..",
        timeout=1.0,
    )
    assert escape is None, "a response topic that is not $file-response/{client_id} is not served"
    assert sorted(d.name for d in (store / "raw-dock").iterdir()) == [
        "%2E.",
        "a%3Ab%25c",
        "my-file-001",
    ]
    assert sorted(d.name for d in store.iterdir()) == ["raw-dock"]


def test_bad_segments_and_fins_refused(dock: RawSender, store: Path) -> None:
    data = os.urandom(2 * SEG)
    fid = p.sha256_hex(data)
    orphan = dock.segment(fid, 0, data[:SEG])
    assert orphan is not None and not orphan.ok, "a segment before init is refused"
    assert dock.init(fid, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
    beyond = dock.segment(fid, SEG + 1, data[:SEG])
    assert beyond is not None and not beyond.ok and "beyond" in beyond.reason_description
    corrupt = dock.segment(fid, 0, data[:SEG], checksum="0" * 64)
    assert corrupt is not None and not corrupt.ok and "checksum" in corrupt.reason_description
    assert dock.segment(fid, 0, data[:SEG]).ok
    early = dock.fin(fid, len(data))
    assert early is not None and not early.ok, "fin before every byte arrived fails"
    assert dock.segment(fid, SEG, data[SEG:]).ok
    wrong = dock.fin(fid, len(data), checksum="1" * 64)
    assert wrong is not None and not wrong.ok
    assert not (store / "raw-dock" / fid / "clip.MP4").exists()
    assert dock.fin(fid, len(data)).ok  # type: ignore[union-attr]


def test_content_not_matching_its_id_never_lands(dock: RawSender, store: Path) -> None:
    data = os.urandom(SEG)
    liar = p.sha256_hex(b"something else")
    assert dock.init(liar, "clip.MP4", len(data)).ok  # type: ignore[union-attr]
    assert dock.segment(liar, 0, data).ok
    resp = dock.fin(liar, len(data))
    assert resp is not None and not resp.ok and "mismatch" in resp.reason_description
    assert not (store / "raw-dock" / liar / "clip.MP4").exists()


def test_malformed_commands_do_not_stop_the_receiver(dock: RawSender) -> None:
    fid = p.sha256_hex(b"ok")
    for topic, payload in [
        (p.init_topic("$file", fid), b"\xff"),
        (f"$file/{fid}/what/ever/x", b""),
        (p.init_topic("$file", fid), b'{"name": []}'),
    ]:
        resp = dock.command(topic, payload)
        assert resp is not None and not resp.ok
    dock.client.publish(p.init_topic("$file", fid), b"{}", qos=1)  # no response topic: dropped
    assert dock.init(fid, "ok.txt", 2).ok  # type: ignore[union-attr]
    assert dock.segment(fid, 0, b"ok").ok
    assert dock.fin(fid, 2).ok  # type: ignore[union-attr]


def test_restart_keeps_complete_files_and_partials(broker: Broker, store: Path) -> None:
    rx = start_receiver(broker, store)
    dock = RawSender(broker)
    try:
        done = os.urandom(SEG)
        send_all(dock, p.sha256_hex(done), done, "done.MP4")
        assert dock.fin(p.sha256_hex(done), SEG).ok  # type: ignore[union-attr]
        data = os.urandom(4 * SEG)
        fid = p.sha256_hex(data)
        assert dock.init(fid, "half.MP4", len(data)).ok  # type: ignore[union-attr]
        for off in (0, SEG):
            assert dock.segment(fid, off, data[off : off + SEG]).ok
        rx.stop()
        coverage = json.loads((store / "raw-dock" / fid / ".partial" / "coverage.json").read_text())
        assert coverage == [[0, 2 * SEG]], "held offsets are durable across a restart"
        rx = start_receiver(broker, store)
        for off in (2 * SEG, 3 * SEG):
            assert dock.segment(fid, off, data[off : off + SEG]).ok
        assert dock.fin(fid, len(data)).ok  # type: ignore[union-attr]
        assert (store / "raw-dock" / fid / "half.MP4").read_bytes() == data
        assert (store / "raw-dock" / p.sha256_hex(done) / "done.MP4").read_bytes() == done
    finally:
        dock.close()
        rx.stop()


def test_receiver_config_refuses_unknown_and_missing_keys() -> None:
    cfg = parse_receiver_config(
        {"receiver": {"store_dir": "/srv/evidence"}, "mqtt": {"port": 1884}}
    )
    assert cfg.receiver.client_id == "dock-receiver" and cfg.mqtt.port == 1884
    with pytest.raises(ConfigError) as exc:
        parse_receiver_config({"receiver": {"stor_dir": "/x"}, "mqtt": {"prot": 1}})
    text = "\n".join(exc.value.problems)
    assert "receiver.stor_dir: unknown key" in text and "receiver.store_dir: missing" in text
    assert "mqtt.prot: unknown key" in text
    with pytest.raises(ConfigError, match="receiver: missing"):
        parse_receiver_config({})


def test_receive_command_exits_2_naming_each_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from agent.commands import receive

    conf = tmp_path / "central.toml"
    conf.write_text('[receiver]\nclient_id = "a b"\n[mqtt]\nport = "x"\n')
    assert receive.run(argparse.Namespace(config=str(conf))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("dock-agent: config: ") for line in lines)
    assert any("receiver.store_dir: missing" in line for line in lines)
