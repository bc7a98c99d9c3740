"""Custody log: the chain, tamper detection, torn-tail repair, threads, and a SIGKILL mid-append."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.evidence.custody import (
    ZERO_HASH,
    CustodyError,
    CustodyLog,
    canonical,
    entry_hash,
    iter_entries,
    read_head,
    seal,
    sealed_line,
    verify_chain,
)
from agent.evidence.index import ClipIndex

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "custody.jsonl"


def _fill(path: Path, n: int) -> list[dict]:
    log = CustodyLog(path)
    entries = [
        log.append("clip_offloaded", device="ZFY1", file=f"c{i}.MP4", size=i) for i in range(n)
    ]
    log.close()
    return entries


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_chain_is_built_as_the_spec_says(log_path: Path) -> None:
    entries = _fill(log_path, 3)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == ZERO_HASH
    assert entries[1]["prev"] == entries[0]["hash"]
    first = json.loads(_lines(log_path)[0])
    body = {k: v for k, v in first.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert (
        first["hash"]
        == entry_hash(first)
        == __import__("hashlib").sha256(canonical.encode("utf-8")).hexdigest()
    )
    assert first["ts"].endswith("+00:00")
    assert verify_chain(log_path) == []
    assert list(iter_entries(log_path)) == entries


def test_head_survives_reopen_and_empty_log_has_zero_head(log_path: Path) -> None:
    assert CustodyLog(log_path).head() == (0, ZERO_HASH)
    entries = _fill(log_path, 5)
    reopened = CustodyLog(log_path)
    assert reopened.head() == (5, entries[-1]["hash"])
    assert reopened.append("docked", device="ZFY1")["prev"] == entries[-1]["hash"]
    assert verify_chain(log_path) == []


def test_read_head_is_read_only_and_ignores_a_torn_tail(log_path: Path) -> None:
    assert read_head(log_path) == (0, ZERO_HASH)
    entries = _fill(log_path, 2)
    with open(log_path, "ab") as fh:
        fh.write(b'{"seq":3')
    log_path.chmod(0o440)
    assert read_head(log_path) == (2, entries[-1]["hash"])
    assert log_path.read_bytes().endswith(b'{"seq":3')


def test_unicode_fields_are_kept_and_hashed_as_utf8(log_path: Path) -> None:
    entry = CustodyLog(log_path).append("exported", operator="张三", reason="复核")
    assert "张三".encode() in log_path.read_bytes()
    assert verify_chain(log_path) == []
    assert entry["operator"] == "张三"


def test_reserved_field_names_are_refused(log_path: Path) -> None:
    with pytest.raises(ValueError, match="seq"):
        CustodyLog(log_path).append("docked", seq=7)


def test_one_tampered_byte_in_a_middle_line_names_that_seq(log_path: Path) -> None:
    _fill(log_path, 6)
    lines = _lines(log_path)
    lines[3] = lines[3].replace(b'"size":3', b'"size":4')
    log_path.write_bytes(b"".join(lines))
    problems = verify_chain(log_path)
    assert problems and all("seq 4" in p for p in problems)
    assert any("hash does not match" in p for p in problems)


def test_a_byte_that_breaks_json_is_named_by_line(log_path: Path) -> None:
    _fill(log_path, 4)
    data = bytearray(log_path.read_bytes())
    data[len(_lines(log_path)[0]) + 1] = ord("#")  # first key quote of line 2
    log_path.write_bytes(bytes(data))
    assert verify_chain(log_path) == ["line 2 (after seq 1): unparseable"]


def test_a_deleted_line_is_detected(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    log_path.write_bytes(b"".join(lines[:2] + lines[3:]))
    problems = verify_chain(log_path)
    assert any("seq 4: expected seq 3" in p for p in problems)
    assert any("seq 4: prev does not match" in p for p in problems)


def test_torn_last_line_is_moved_aside_and_the_chain_continues(log_path: Path) -> None:
    entries = _fill(log_path, 3)
    torn = b'{"event":"clip_offloaded","prev":"ab'
    with open(log_path, "ab") as fh:
        fh.write(torn)
    assert verify_chain(log_path)  # the tear is visible before repair
    log = CustodyLog(log_path)
    assert log.head() == (3, entries[-1]["hash"])
    aside = list(log_path.parent.glob("custody.jsonl.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    assert log.append("undocked", device="ZFY1")["seq"] == 4
    assert verify_chain(log_path) == []


def test_a_corrupt_complete_last_line_refuses_to_continue(log_path: Path) -> None:
    _fill(log_path, 2)
    with open(log_path, "ab") as fh:
        fh.write(b"not json\n")
    with pytest.raises(CustodyError, match="dock-agent verify"):
        CustodyLog(log_path)


def test_concurrent_appends_from_four_threads_make_one_chain(log_path: Path) -> None:
    log = CustodyLog(log_path)

    def work(n: int) -> None:
        for i in range(50):
            log.append("clip_verified", worker=n, i=i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify_chain(log_path) == []
    assert [e["seq"] for e in iter_entries(log_path)] == list(range(1, 201))


def test_two_handles_on_one_log_keep_one_chain(log_path: Path) -> None:
    """A CLI command (export, hold) appends while the daemon holds the log open."""
    daemon, cli = CustodyLog(log_path), CustodyLog(log_path)
    daemon.append("docked", device="ZFY1")
    cli.append("hold", clip="x", reason="complaint")
    assert daemon.append("undocked", device="ZFY1")["seq"] == 3
    assert cli.head() == daemon.head()
    assert verify_chain(log_path) == []


CHILD = """
import sys
from pathlib import Path
from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex
data = Path(sys.argv[1])
log, index = CustodyLog(data / "custody.jsonl"), ClipIndex(data)
i = 0
while True:
    cid = f"{i:064x}"[::-1]
    index.put({"clip_id": cid, "state": "offloaded", "size": i, "flags": ["x"] * (i % 5)})
    seq = log.append("clip_offloaded", sha256=cid, size=i, pad="p" * (i % 700))["seq"]
    if i % 3 == 0:
        index.archive(cid)
    print(i, seq, flush=True)
    i += 1
"""


def _run_and_kill(data: Path) -> list[tuple[int, int]]:
    """Start the child, let it run a random while, SIGKILL it; return what it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # running: the first put and append are done
    time.sleep(random.uniform(0.05, 0.4))
    os.kill(child.pid, signal.SIGKILL)
    out = (first + child.stdout.read()).decode()
    child.wait()
    acked = [tuple(map(int, line.split())) for line in out.splitlines() if len(line.split()) == 2]
    return [(a, b) for a, b in acked]


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_mid_loop_leaves_verifiable_log_and_loadable_index(
    tmp_path: Path, round_: int
) -> None:
    acked = _run_and_kill(tmp_path)
    log = CustodyLog(tmp_path / "custody.jsonl")  # repairs a torn tail, if any
    assert verify_chain(tmp_path / "custody.jsonl") == []
    last_seq = acked[-1][1] if acked else 1
    assert log.head()[0] >= last_seq  # nothing acknowledged is lost
    index = ClipIndex(tmp_path)
    for i, _seq in acked:
        record = index.get(f"{i:064x}"[::-1])
        assert record is not None and record["size"] == i
    assert log.append("docked", device="after-crash")["seq"] == log.head()[0]
    assert verify_chain(tmp_path / "custody.jsonl") == []


def test_append_many_chains_entries_with_one_fsync(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CustodyLog(log_path)
    first = log.append("docked", device="ZFY1")
    syncs: list[int] = []
    real_fsync = os.fsync
    the_log = os.stat(log_path).st_ino

    def counted(fd: int) -> None:
        if os.fstat(fd).st_ino == the_log:  # the log's own fsyncs (agent.durable.AppendLog)
            syncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)  # custody.py appends through agent.durable
    batch = log.append_many(
        [
            (
                "clip_offloaded",
                {"device_id": "ZFY1", "file": f"c{i}.JPG", "sha256": "ab", "size": i},
            )
            for i in range(3)
        ]
        + [("clip_verified", {"device_id": "ZFY1", "sha256": "ab", "size": 2})]
    )
    assert len(syncs) == 1  # durable before append_many returns: one fsync for the batch
    assert [e["seq"] for e in batch] == [2, 3, 4, 5]
    assert batch[0]["prev"] == first["hash"] and batch[1]["prev"] == batch[0]["hash"]
    assert log.head() == (5, batch[-1]["hash"])
    assert list(iter_entries(log_path)) == [first, *batch]
    assert verify_chain(log_path) == []
    assert log.append_many([]) == []
    assert CustodyLog(log_path).append("undocked", device="ZFY1")["seq"] == 6
    assert verify_chain(log_path) == []


def test_append_many_refuses_reserved_fields_and_writes_nothing(log_path: Path) -> None:
    log = CustodyLog(log_path)
    with pytest.raises(ValueError):
        log.append_many([("docked", {"device": "a"}), ("docked", {"seq": 9})])
    assert not log_path.read_bytes() and log.head() == (0, ZERO_HASH)


def test_the_first_entry_alone_carries_a_random_chain_id(tmp_path: Path) -> None:
    from agent.evidence.custody import chain_id_of

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first_a, second_a = _fill(a, 2)
    (first_b,) = _fill(b, 1)
    assert len(first_a["chain_id"]) == 32 and int(first_a["chain_id"], 16) >= 0
    assert first_a["chain_id"] != first_b["chain_id"], "each log its own chain"
    assert "chain_id" not in second_a
    assert entry_hash(first_a) == first_a["hash"], "the id is covered by the first hash"
    assert chain_id_of(first_a) == first_a["chain_id"]
    legacy = {k: v for k, v in first_a.items() if k != "chain_id"}
    assert chain_id_of(legacy) == legacy["hash"][:32], "a log from before chain ids: derived"
    with pytest.raises(ValueError, match="chain_id"):
        CustodyLog(a).append("hold", chain_id="x")


def test_a_cut_ends_at_the_last_complete_line(log_path: Path) -> None:
    from agent.evidence.custody import read_cut

    assert read_cut(log_path).seq == 0
    entries = _fill(log_path, 3)
    size = log_path.stat().st_size
    with open(log_path, "ab") as fh:
        fh.write(b'{"seq": 4, "torn')
    cut = read_cut(log_path)
    assert (cut.size, cut.seq, cut.hash) == (size, 3, entries[-1]["hash"])
    assert [e["seq"] for e in iter_entries(log_path, cut.size)] == [1, 2, 3]
    assert verify_chain(log_path, cut.size) == []
    assert [e["seq"] for e in iter_entries(log_path, len(_lines(log_path)[0]))] == [1]


@pytest.mark.parametrize("seed", range(20))
def test_a_sealed_line_is_the_canonical_entry_and_its_hash_the_entry_hash(seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "file", "hash_of", "h", "hasi", "size", "zz", "Ü", "device_id", "offloaded"]
    fields = {
        name: rng.choice([rng.randint(-5, 10**12), 'x\u00e9\n"', None, [1, "b"], {"k": 1.5}])
        for name in rng.sample(names, rng.randint(0, len(names)))
    }
    chain = rng.choice(["", "c" * 32])
    entry, line = sealed_line(
        rng.randint(1, 99), "2026-12-07T18:00:00Z", "e", "p" * 64, fields, chain
    )
    assert line == canonical(entry)
    assert entry["hash"] == entry_hash(entry)
    assert entry == seal(entry["seq"], entry["ts"], "e", "p" * 64, fields, chain)
