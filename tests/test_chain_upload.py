"""The dock's chain upload and the receiver's custody desk, joined by a direct hand-over.

The transport is the sender's job and is tested with a real broker elsewhere
(tests/test_chain_e2e.py); here `send` puts the file where the receiver's store would and
calls the desk as the receiver does before it answers fin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.chunk import read_chain_id
from agent.chain.receiving import CustodyDesk
from agent.chain.upload import ChainUpload
from agent.transfer import protocol as p
from tests.chain_kit import fill, rewrite

DOCK = "dock-01"


class Central:
    """A receiver store with the custody desk; counts what was sent."""

    def __init__(self, root: Path, key: Ed25519PrivateKey) -> None:
        self.root = root
        self.desk = CustodyDesk(root, lambda client: key.public_key() if client == DOCK else None)
        self.sent: list[str] = []

    def send(
        self,
        path: Path,
        file_id: str,
        name: str,
        size: int,
        user_data: dict[str, Any],
        cancel: Any = None,
    ) -> None:
        fdir = self.root / DOCK / file_id
        fdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, fdir / name)
        (fdir / "manifest.json").write_text(json.dumps(user_data))
        self.sent.append(name)
        self.desk.on_fin(DOCK, fdir)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def upload(tmp_path: Path, central: Central, key: Ed25519PrivateKey) -> ChainUpload:
    data = tmp_path / "data"
    return ChainUpload(data / "custody.jsonl", DOCK, key, data / "transfer", central.send)


def test_ensure_sends_up_to_a_seq_and_flush_the_rest(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    central = Central(tmp_path / "store", key)
    (tmp_path / "data").mkdir()
    log = tmp_path / "data" / "custody.jsonl"
    fill(log, 5)
    up = upload(tmp_path, central, key)
    up.ensure(3)
    assert central.sent == ["custody-000000001-000000005.jsonl"]
    assert up.flush() == 0 and not up.pending()
    fill(log, 4, start=5)
    assert up.pending()
    again = upload(tmp_path, central, key)  # a restart: the state is read back
    assert again.held_seq == 5 and again.flush() == 1
    assert central.sent[-1] == "custody-000000006-000000009.jsonl"
    hold = central.desk.hold(DOCK)
    chain = read_chain_id(log) or ""
    assert b"".join(x + b"\n" for x in hold.lines(chain, 1, 9)) == log.read_bytes()


def test_a_rehashed_log_is_refused_and_a_wiped_one_is_a_new_chain(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    central = Central(tmp_path / "store", key)
    (tmp_path / "data").mkdir()
    log = tmp_path / "data" / "custody.jsonl"
    fill(log, 5)
    up = upload(tmp_path, central, key)
    up.flush()
    rewrite(log, 3, file="cut.MP4")
    fill(log, 1, start=5)
    with pytest.raises(p.ProtocolError, match="custody_fork") as refused:
        up.flush()
    assert refused.value.reason_code == p.UNSPECIFIED_ERROR
    assert up.held_seq == 5, "nothing of a refused chunk counts as held"
    forks = (central.root / DOCK / "_custody" / "forks").glob("*.json")
    assert sorted(json.loads(f.read_text())["seq"] for f in forks) == [3, 6], (
        "the link that broke, and (the log sent again from seq 1) the entry that was edited"
    )
    kept = {d.name for d in (central.root / DOCK).iterdir()} - {"_custody"}
    assert len(kept) == 2, "the refused transfers stay complete (resends checked, not stored)"
    with pytest.raises(p.ProtocolError, match="custody_fork"):
        up.flush()
    assert len(list((central.root / DOCK / "_custody" / "forks").glob("*.json"))) == 2
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").mkdir()
    fill(log, 2)
    assert upload(tmp_path, central, key).flush() == 1
    assert len(central.desk.hold(DOCK).chains()) == 2


def test_the_pacer_sends_at_a_dockings_end_before_clips_and_every_period(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    from agent.chain.pacer import ChainPacer
    from agent.events import DockEvent

    central = Central(tmp_path / "store", key)
    (tmp_path / "data").mkdir()
    log = tmp_path / "data" / "custody.jsonl"
    entries = fill(log, 3)
    now = [0.0]
    woken: list[bool] = []
    pacer = ChainPacer(
        upload(tmp_path, central, key), 300, lambda: woken.append(True), lambda: now[0]
    )
    assert pacer.due(), "at start-up what is new goes up"
    assert pacer.flush() == 1
    fill(log, 1, start=3)
    assert not pacer.due(), "new entries wait for the period or a docking's end"
    pacer.listen(DockEvent("clip_offloaded", {}))
    assert not pacer.due()
    pacer.listen(DockEvent("offload_complete", {"bay": 1}))
    assert pacer.due() and woken == [True]
    assert pacer.flush() == 1 and not pacer.due()
    more = fill(log, 2, start=4)
    pacer.before_clip({"custody_seq": more[0]["seq"]})
    assert central.sent[-1] == "custody-000000005-000000006.jsonl", "all that is new, in order"
    fill(log, 1, start=6)
    now[0] = 299.0
    assert not pacer.due()
    now[0] = 301.0
    assert pacer.due() and pacer.flush() == 1
    now[0] = 700.0
    assert not pacer.due(), "nothing new: nothing due"
    assert entries[0]["seq"] == 1
