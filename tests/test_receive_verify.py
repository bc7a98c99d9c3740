"""`dock-agent receive verify` (SPEC 8.1) over chains and clips held at central."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.chain.check import parse_meta
from agent.chain.chunk import build_chunk
from agent.chain.holding import ACKNOWLEDGED, ChainHold
from agent.trust import keys
from tests.bench.chain_synth import clip_sha, populate
from tests.chain_kit import fill, rewrite

ENTRIES, AT_CENTRAL = 700, 40


def receive_verify(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "receive", "verify", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    """(receiver config, store) with two docks' chains and clips."""
    store, keys_dir = tmp_path / "store", tmp_path / "dock-keys"
    populate(store, keys_dir, 2, ENTRIES, AT_CENTRAL)
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[mqtt]\nport = 1\n[receiver]\nstore_dir = "{store}"\ndock_keys_dir = "{keys_dir}"\n'
    )
    return config, store


def lines(result: subprocess.CompletedProcess[str], label: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(label)]


def chain_dir(store: Path, dock: str = "dock-000") -> Path:
    (only,) = [p for p in (store / dock / "_custody").iterdir() if p.name != "forks"]
    return only


def test_an_intact_site_passes_with_one_line_per_dock(site: tuple[Path, Path]) -> None:
    config, _ = site
    result = receive_verify(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result, "MISMATCH") == []
    docks = lines(result, "dock ")
    assert len(docks) == 2 and all(f"seqs 1-{ENTRIES}" in d for d in docks)
    assert all(f"{AT_CENTRAL} clips at central, {AT_CENTRAL} matched" in d for d in docks)
    pending = lines(result, "pending dock-000")
    assert pending and all("not at central yet" in p for p in pending)
    assert result.stdout.splitlines()[-1].startswith("receive verify OK: 2 docks, 0 problems")
    doc = json.loads(receive_verify(config, "--json", "--dock", "dock-001").stdout)
    assert [d["dock"] for d in doc] == ["dock-001"] and doc[0]["problems"] == []
    assert len(doc[0]["pending"]) == len(pending)


def test_an_entry_altered_at_central_is_named_by_seq(site: tuple[Path, Path]) -> None:
    config, store = site
    run = chain_dir(store) / "000000001.jsonl"
    run.write_bytes(run.read_bytes().replace(b'"bay":1', b'"bay":2', 1))
    result = receive_verify(config)
    assert result.returncode == 1
    assert lines(result, "MISMATCH") == [
        f"MISMATCH dock-000: chain {chain_dir(store).name}: seq 1: hash does not match the "
        "entry (altered at central)"
    ]


def test_a_missing_run_and_a_foreign_key_are_problems(site: tuple[Path, Path]) -> None:
    config, store = site
    cdir = chain_dir(store)
    (cdir / "000002501.jsonl").unlink(missing_ok=True)
    runs = sorted(cdir.glob("*.jsonl"))
    assert len(runs) == 1, "700 entries: one run"
    # a second dock's key in dock-000's place: every signature fails
    shutil.copy(
        config.parent / "dock-keys" / "dock-001.pub", config.parent / "dock-keys" / "dock-000.pub"
    )
    result = receive_verify(config, "--dock", "dock-000")
    assert result.returncode == 1
    assert any("chain_sig does not verify" in line for line in lines(result, "MISMATCH"))


def test_a_clip_deleted_from_its_recorder_that_central_lacks_is_named(
    site: tuple[Path, Path],
) -> None:
    config, store = site
    sha = clip_sha("dock-001", 3)
    shutil.rmtree(store / "dock-001" / sha)
    result = receive_verify(config)
    assert result.returncode == 1
    (problem,) = lines(result, "MISMATCH")
    assert f"recorder_clip_deleted of clip {sha}, which central does not hold" in problem
    assert problem.startswith("MISMATCH dock-001: chain ") and ": seq " in problem


def test_a_clip_at_central_the_chain_never_offloaded_is_named(site: tuple[Path, Path]) -> None:
    config, store = site
    stray = store / "dock-000" / ("e" * 64)
    stray.mkdir()
    (stray / "x.MP4").write_bytes(b"x")
    (stray / "manifest.json").write_text(json.dumps({"sha256": "e" * 64, "custody_seq": 5}))
    result = receive_verify(config)
    assert lines(result, "MISMATCH") == [
        f"MISMATCH dock-000: clip {'e' * 64} is at central but no chain has its clip_offloaded"
    ]


def test_forks_are_problems_and_new_chains_are_listed_until_acknowledged(
    tmp_path: Path,
) -> None:
    store, keys_dir = tmp_path / "store", tmp_path / "keys"
    key = Ed25519PrivateKey.generate()
    keys_dir.mkdir()
    keys.write_public(keys_dir / "dock-01.pub", key.public_key(), "dock-01")
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[mqtt]\nport = 1\n[receiver]\nstore_dir = "{store}"\ndock_keys_dir = "{keys_dir}"\n'
    )
    hold = ChainHold(store / "dock-01" / "_custody")
    log, wiped = tmp_path / "a" / "custody.jsonl", tmp_path / "b" / "custody.jsonl"
    log.parent.mkdir()
    wiped.parent.mkdir()
    fill(log, 6)

    def send(path: Path, first: int = 1) -> None:
        chunk = build_chunk(path, "dock-01", key, first)
        assert chunk is not None
        hold.accept(parse_meta(chunk.user_data), chunk.data, key.public_key())

    send(log)
    assert receive_verify(config).returncode == 0
    fill(wiped, 2)
    send(wiped)
    result = receive_verify(config)
    assert result.returncode == 0, "a new chain is for a person, not a mismatch"
    (new,) = lines(result, "ACKNOWLEDGE")
    assert "a new chain of this dock (seqs 1-2" in new
    chain = json.loads(wiped.read_bytes().splitlines()[0])["chain_id"]
    (hold.root / chain / ACKNOWLEDGED).write_text('{"by": "张科长"}')
    assert lines(receive_verify(config), "ACKNOWLEDGE") == []
    rewrite(log, 4, file="cut.MP4")
    with pytest.raises(Exception, match="custody_fork"):
        send(log)
    result = receive_verify(config)
    assert result.returncode == 1
    (fork,) = lines(result, "MISMATCH")
    assert ": seq 4: a chunk (seqs 1-6) was refused as custody_fork" in fork


def test_an_unknown_dock_is_one_line(site: tuple[Path, Path]) -> None:
    config, _ = site
    result = receive_verify(config, "--dock", "dock-999")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "dock-999" in result.stderr


def test_a_deletion_before_the_clips_arrival_was_logged_is_named(tmp_path: Path) -> None:
    from agent.evidence.custody import CustodyLog

    store, keys_dir = tmp_path / "store", tmp_path / "keys"
    keys_dir.mkdir()
    key = Ed25519PrivateKey.generate()
    keys.write_public(keys_dir / "dock-01.pub", key.public_key(), "dock-01")
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[mqtt]\nport = 1\n[receiver]\nstore_dir = "{store}"\ndock_keys_dir = "{keys_dir}"\n'
    )
    log_path = tmp_path / "custody.jsonl"
    log = CustodyLog(log_path)
    sha = "ab" * 32
    offloaded = log.append("clip_offloaded", device_id="ZFY1", file="a.MP4", sha256=sha)
    deleted = log.append("recorder_clip_deleted", device_id="ZFY1", file="a.MP4", sha256=sha)
    log.append("clip_synced", device_id="ZFY1", sha256=sha)
    log.close()
    chunk = build_chunk(log_path, "dock-01", key, 1)
    assert chunk is not None
    ChainHold(store / "dock-01" / "_custody").accept(
        parse_meta(chunk.user_data), chunk.data, key.public_key()
    )
    clip = store / "dock-01" / sha
    clip.mkdir()
    (clip / "a.MP4").write_bytes(b"a")
    (clip / "manifest.json").write_text(
        json.dumps(
            {"sha256": sha, "custody_seq": offloaded["seq"], "custody_hash": offloaded["hash"]}
        )
    )
    result = receive_verify(config)
    assert result.returncode == 1
    assert lines(result, "MISMATCH") == [
        f"MISMATCH dock-01: chain {offloaded['chain_id']}: seq {deleted['seq']}: "
        f"recorder_clip_deleted of clip {sha} before its clip_synced entry"
    ]
