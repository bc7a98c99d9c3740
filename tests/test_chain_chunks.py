"""Custody chunks (SPEC 8.1): built from the log byte for byte, checked link by link at central."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.chain.check import FORK, GAP, INVALID, UNSIGNED, ChunkRefused, Held, parse_meta
from agent.chain.chunk import USER_DATA_MAX, build_chunk, read_chain_id
from agent.chain.holding import HEAD, ChainHold
from agent.evidence.custody import canonical
from agent.trust import signatures
from tests.chain_kit import fill, key, rewrite

DOCK = "dock-01"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "custody.jsonl"
    path.parent.mkdir()
    fill(path, 10)
    return path


@pytest.fixture
def hold(tmp_path: Path) -> ChainHold:
    return ChainHold(tmp_path / "store" / DOCK / "_custody")


def test_a_chunk_is_the_log_byte_for_byte_and_signed(log: Path) -> None:
    k = key()
    chunk = build_chunk(log, DOCK, k, 1)
    assert chunk is not None
    assert chunk.name == "custody-000000001-000000010.jsonl"
    assert chunk.data == log.read_bytes()
    first = json.loads(log.read_bytes().splitlines()[0])
    last = json.loads(log.read_bytes().splitlines()[-1])
    meta = chunk.user_data
    assert meta == {
        "kind": "custody",
        "dock_id": DOCK,
        "chain_id": first["chain_id"],
        "first_seq": 1,
        "last_seq": 10,
        "prev_hash": "0" * 64,
        "head_hash": last["hash"],
        "chain_sig": meta["chain_sig"],
    }
    message = f"custody\n{DOCK}\n{first['chain_id']}\n10\n{last['hash']}"
    assert signatures.verify(k.public_key(), message, meta["chain_sig"])
    assert read_chain_id(log) == first["chain_id"]


def test_user_data_stays_within_1024_bytes_with_the_longest_ids(log: Path) -> None:
    chunk = build_chunk(log, "d" * 64, key(), 1)
    assert chunk is not None
    with_sig = {**chunk.user_data, "dock_sig": "f" * 128, "first_seq": 10**11}
    assert len(canonical(with_sig).encode()) <= USER_DATA_MAX


def test_chunks_continue_from_an_offset_and_respect_size_and_limit(log: Path) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    small = build_chunk(log, DOCK, key(), 1, max_bytes=len(lines[0]) * 3 + 10)
    assert small is not None and (small.first_seq, small.last_seq) == (1, 3)
    nxt = build_chunk(log, DOCK, key(), 4, start=small.end_offset)
    assert nxt is not None and (nxt.first_seq, nxt.last_seq) == (4, 10)
    assert small.data + nxt.data == log.read_bytes()
    cut = build_chunk(log, DOCK, key(), 4, start=small.end_offset, limit=sum(map(len, lines[:6])))
    assert cut is not None and cut.last_seq == 6
    assert build_chunk(log, DOCK, key(), 11, start=nxt.end_offset) is None


def send(hold: ChainHold, log: Path, k, first: int = 1, **kw) -> int:  # type: ignore[no-untyped-def]
    chunk = build_chunk(log, DOCK, k, first, **kw)
    assert chunk is not None
    return hold.accept(parse_meta(chunk.user_data), chunk.data, k.public_key())


def test_central_stores_chunks_in_order_and_resends_are_idempotent(
    log: Path, hold: ChainHold
) -> None:
    k = key()
    assert send(hold, log, k, max_bytes=2000) > 0
    while (held := hold.held(read_chain_id(log) or "")).last_seq < 10:
        assert send(hold, log, k, held.last_seq + 1, max_bytes=2000) > 0
    assert send(hold, log, k, 1) == 0, "a resend of what central holds adds nothing"
    fill(log, 5, start=10)
    assert send(hold, log, k, 3) == 5, "an overlap that is byte-identical, then new entries"
    chain = read_chain_id(log) or ""
    assert b"".join(line + b"\n" for line in hold.lines(chain, 1, 15)) == log.read_bytes()
    (hold.root / chain / HEAD).unlink()
    assert hold.held(chain).last_seq == 15, "runs written after head.json are found"


def test_an_entry_rewritten_and_rehashed_is_a_fork_kept_aside(
    log: Path, hold: ChainHold, caplog: pytest.LogCaptureFixture
) -> None:
    k = key()
    send(hold, log, k)
    rewrite(log, 7, file="other.MP4")
    fill(log, 2, start=10)
    with pytest.raises(ChunkRefused) as refused:
        send(hold, log, k, 11)
    assert (refused.value.reason, refused.value.seq) == (FORK, 11), "no longer links to seq 10"
    with pytest.raises(ChunkRefused) as refused:
        send(hold, log, k, 1)
    assert (refused.value.reason, refused.value.seq) == (FORK, 7)
    forks = sorted((hold.root / "forks").glob("*.json"))
    assert sorted(json.loads(f.read_text())["seq"] for f in forks) == [7, 11]
    assert [r.message for r in caplog.records].count(caplog.records[-1].message) == 1
    assert "refused (custody_fork" in caplog.records[-1].message
    assert hold.held(read_chain_id(log) or "").last_seq == 10, "nothing of a fork is held"


def test_gaps_bad_signatures_and_altered_entries_are_refused(log: Path, hold: ChainHold) -> None:
    k = key()
    with pytest.raises(ChunkRefused) as refused:
        send(hold, log, k, 4)
    assert refused.value.reason == GAP and not refused.value.keep
    with pytest.raises(ChunkRefused) as refused:
        chunk = build_chunk(log, DOCK, key(), 1)
        assert chunk is not None
        hold.accept(parse_meta(chunk.user_data), chunk.data, k.public_key())
    assert refused.value.reason == UNSIGNED and not (hold.root / "forks").exists()
    text = log.read_text().replace('"c4.MP4"', '"c9.MP4"')  # edited without re-hashing
    log.write_text(text)
    with pytest.raises(ChunkRefused) as refused:
        send(hold, log, k)
    assert (refused.value.reason, refused.value.seq) == (INVALID, 5)
    assert hold.chains() == []


def test_a_new_chain_of_a_known_dock_is_kept_beside_the_old(
    tmp_path: Path, log: Path, hold: ChainHold
) -> None:
    k = key()
    send(hold, log, k)
    wiped = tmp_path / "wiped" / "custody.jsonl"
    wiped.parent.mkdir()
    fill(wiped, 3)
    assert send(hold, wiped, k) == 3
    assert hold.chains() == [read_chain_id(log), read_chain_id(wiped)]
    assert hold.held(read_chain_id(log) or "").last_seq == 10


def test_a_log_from_before_chain_ids_is_accepted_under_its_derived_id(
    log: Path, hold: ChainHold
) -> None:
    entries = [json.loads(line) for line in log.read_bytes().splitlines()]
    entries[0].pop("chain_id")
    log.write_bytes(b"".join(canonical(e).encode() + b"\n" for e in entries))
    rewrite(log, 1)  # re-hashed: a log as written before SPEC 8.1
    assert read_chain_id(log) == json.loads(log.read_bytes().splitlines()[0])["hash"][:32]
    assert send(hold, log, key()) == 10


@pytest.mark.parametrize(
    "change",
    [
        {"first_seq": "1"},
        {"first_seq": True},
        {"last_seq": 10**13},
        {"chain_id": "../x"},
        {"dock_id": ""},
        {"head_hash": "A" * 64},
        {"chain_sig": None},
        {"first_seq": 5, "last_seq": 4},
    ],
)
def test_malformed_user_data_is_refused_and_kept_nowhere(log: Path, change: dict) -> None:
    chunk = build_chunk(log, DOCK, key(), 1)
    assert chunk is not None
    with pytest.raises(ChunkRefused) as refused:
        parse_meta({**chunk.user_data, **change})
    assert refused.value.reason == INVALID and not refused.value.keep


def test_held_of_an_unknown_chain_is_empty(hold: ChainHold) -> None:
    assert hold.held("0" * 32) == Held()
