"""The dock's sender against EMQX's behaviour (tests/emqx/fixture.py) through a real Mosquitto."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.sync.parcel import Parcels, encoded_size, manifest_name, manifest_user_data
from agent.transfer.sender import FileSender, QuotaExceeded, SendSettings, TransferInterrupted
from tests.broker import Broker, mosquitto_binary
from tests.dock import wait_for
from tests.emqx.fixture import EmqxFileTransfer
from tests.test_sender_rules import manifest_with_notes
from tests.transfer_kit import close, dock_connection, random_file

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
pytest_plugins = ["tests.transfer_kit", "tests.emqx.fixture"]  # broker; emqx_ft

SCALE = 0.01  # real seconds per EMQX second
SEG = 65536
CLIENT = "dock-01"


def settings(**kw: Any) -> SendSettings:
    """A sender scaled as the fixture is: fin_timeout_s 330 EMQX seconds."""
    base: dict[str, Any] = {
        "segment_bytes": SEG,
        "max_inflight": 8,
        "ack_timeout_s": 2.0,
        "fin_timeout_s": 330 * SCALE,
        "persist_interval_s": 0.05,
    }
    return SendSettings(**(base | kw))


@pytest.fixture
def make_sender(broker: Broker, tmp_path: Path) -> Iterator[Any]:
    """make_sender(settings) -> a FileSender as dock-01 (one connection per test: one client id)."""
    client = link = dock_connection(broker, CLIENT)

    def make(s: SendSettings | None = None) -> FileSender:
        return FileSender(link, CLIENT, tmp_path / "state", s or settings())

    yield make
    close(client)


def segment_answers(emqx: EmqxFileTransfer, file_id: str) -> int:
    """Segment commands of `file_id` the fixture answered (resends included)."""
    return sum(
        1
        for a in emqx.answers
        if a.command_topic.startswith(f"$file/{file_id}/")
        and a.command_topic.split("/")[2] not in ("init", "fin")
    )


@pytest.mark.parametrize("emqx_ft", [{"assembly_delay": 200, "time_scale": SCALE}], indirect=True)
def test_a_fin_answered_after_200_s_is_waited_for(
    emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path
) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 10 * SEG + 5)
    started = time.monotonic()
    result = make_sender().send(src, fid, "clip.MP4", 10 * SEG + 5, {"sha256": fid})
    assert time.monotonic() - started >= 200 * SCALE, "the fin's answer came after assembly"
    assert (result.fins_sent, result.segments_sent, result.rounds) == (1, 11, 1)
    assert segment_answers(emqx_ft, fid) == 11, "nothing uploaded twice"
    assert emqx_ft.wait_export(CLIENT, fid).path.read_bytes() == src.read_bytes()
    assert emqx_ft.conflicts == []


@pytest.mark.parametrize("emqx_ft", [{"assembly_delay": 200, "time_scale": SCALE}], indirect=True)
def test_a_silent_fin_is_sent_again_alone(
    emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path
) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 6 * SEG)
    sender = make_sender(settings(fin_timeout_s=60 * SCALE))  # shorter than the assembly
    result = sender.send(src, fid, "clip.MP4", 6 * SEG, {})
    assert result.fins_sent >= 2 and result.rounds == 1
    assert result.segments_sent == 6 and segment_answers(emqx_ft, fid) == 6
    assert emqx_ft.wait_export(CLIENT, fid).sha256 == fid


@pytest.mark.parametrize("emqx_ft", [{"time_scale": SCALE}], indirect=True)
def test_every_retry_sends_the_first_init_payload(
    emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path
) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 64 * SEG)
    slow = make_sender(settings(rate_limit_bytes_per_s=1 << 20))
    cancel = threading.Event()
    threading.Timer(0.8, cancel.set).start()
    with pytest.raises(TransferInterrupted):
        slow.send(src, fid, "clip.MP4", 64 * SEG, {"notes": ["first"]}, cancel=cancel)
    inited_by = int(
        time.time()
    )  # the first init's expire_at was counted from this second or before
    wait_for(lambda: int(time.time()) > inited_by, 2, "a later second: a fresh expire_at differs")
    result = make_sender().send(src, fid, "clip.MP4", 64 * SEG, {"notes": ["first", "later"]})
    assert result.skipped > 0, "resumed"
    assert emqx_ft.conflicts == [], "no filemeta_conflict"
    inits = [i.payload for i in emqx_ft.inits if i.file_id == fid]
    assert len(inits) == 2 and inits[0] == inits[1]
    export = emqx_ft.wait_export(CLIENT, fid)
    assert export.user_data == {"notes": ["first"]} and export.sha256 == fid


@pytest.mark.parametrize("emqx_ft", [{"time_scale": SCALE}], indirect=True)
def test_resume_state_older_than_segments_ttl_starts_over(
    emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path
) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 32 * SEG)
    slow = make_sender(settings(rate_limit_bytes_per_s=1 << 20, segments_ttl_s=300))
    cancel = threading.Event()
    threading.Timer(0.6, cancel.set).start()
    with pytest.raises(TransferInterrupted):
        slow.send(src, fid, "clip.MP4", 32 * SEG, {}, cancel=cancel)
    emqx_ft.advance(301)  # the fixture forgets the transfer's fragments
    (state_file,) = (tmp_path / "state").glob("*.json")
    body = json.loads(state_file.read_text())
    assert body["acked"], "some segments were acknowledged"
    body["acked_since"] -= 301  # as old, in the dock's clock, as the fixture's ttl
    state_file.write_text(json.dumps(body))
    result = make_sender(settings(segments_ttl_s=300)).send(src, fid, "clip.MP4", 32 * SEG, {})
    assert (result.rounds, result.skipped, result.segments_sent) == (1, 0, 32)
    assert emqx_ft.wait_export(CLIENT, fid).sha256 == fid and emqx_ft.conflicts == []


@pytest.mark.parametrize("emqx_ft", [{"time_scale": SCALE, "disk_error": "enospc"}], indirect=True)
def test_enospc_is_no_room(emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 4 * SEG)
    started = time.monotonic()
    with pytest.raises(QuotaExceeded, match="enospc"):
        make_sender().send(src, fid, "clip.MP4", 4 * SEG, {})
    assert time.monotonic() - started < 2.0, "no retries against a full store"
    assert len([i for i in emqx_ft.inits if i.file_id == fid]) == 1


@pytest.mark.parametrize(
    "emqx_ft", [{"time_scale": SCALE, "s3_metadata_limit": 2048}], indirect=True
)
def test_a_manifest_with_50_long_notes_syncs_beside_its_clip(
    emqx_ft: EmqxFileTransfer, make_sender: Any, tmp_path: Path
) -> None:
    src = tmp_path / "clip.MP4"
    fid = random_file(src, 3 * SEG)
    manifest = manifest_with_notes(50) | {"sha256": fid, "size": 3 * SEG}
    parcel = Parcels(tmp_path / "manifests").prepare(fid, lambda: manifest)
    sender = make_sender()
    name = str(manifest["file_name"])
    sender.send(src, fid, name, 3 * SEG, parcel.user_data)
    sender.send(
        parcel.manifest_path,
        parcel.manifest_sha256,
        manifest_name(name),
        parcel.manifest_size,
        manifest_user_data("dock-01", fid),
    )
    clip = emqx_ft.wait_export(CLIENT, fid)
    full = emqx_ft.wait_export(CLIENT, parcel.manifest_sha256)
    assert clip.sha256 == fid and encoded_size(clip.user_data) <= 1024
    assert clip.s3_metadata_bytes <= 2048
    assert clip.user_data["manifest_sha256"] == hashlib.sha256(full.path.read_bytes()).hexdigest()
    assert full.name == f"{name}.manifest.json"
    assert json.loads(full.path.read_bytes()) == manifest, "all 50 notes, in full"
