"""The benchmarks time only finished work: a bay in fault, or a clip not stored and verified,
fails the row with a message instead of being timed (tests/bench/stored.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from firmware_interface import simkit
from tests.bench.bench_offload import clip_name, media_dir, offloaded
from tests.bench.daemon_proc import bays_done
from tests.bench.daemon_proc import check_stored as proc_check_stored
from tests.bench.stored import NotStored, bay_finished, check_stored, sources
from tests.dock import dock_config, running, wait_for


def test_a_bay_in_fault_is_never_timed_as_finished() -> None:
    assert bay_finished(1, "ready") and bay_finished(1, "charging")
    assert not bay_finished(1, "offloading")
    with pytest.raises(NotStored, match="bay 2 ended in fault"):
        bay_finished(2, "fault")
    with pytest.raises(NotStored, match="bay 1 ended in fault"):
        offloaded(Went("identifying", "offloading", "fault"), [1])  # type: ignore[arg-type]


class Went:
    """A bay's states in the shape of tests.dock.Views."""

    def __init__(self, *states: str) -> None:
        self.went = list(states)

    def states(self, _bay: int) -> list[str]:
        return self.went


def test_every_clip_must_be_indexed_held_and_verified(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    photos = [media_dir(tmp_path / "bay1") / clip_name(n, "JPG", "ZFY0000001") for n in (1, 2, 3)]
    photos[0].parent.mkdir(parents=True)
    for photo in photos:
        photo.write_bytes(os.urandom(5_000))
    expected = sources(photos)
    with running(cfg) as (daemon, views):
        simkit.dock(tmp_path / "bay1", simkit.SimRecorder(device_id="ZFY0000001"))
        wait_for(lambda: offloaded(views, [1]), 60, "bay 1 to finish")
        record = next(iter(daemon.services.index.iter_all()))
    check_stored(cfg.data_dir, expected)  # a good run passes
    with pytest.raises(NotStored, match=r"1 of 4 clips not stored and verified: f{12}: not in"):
        check_stored(cfg.data_dir, {**expected, "f" * 64: 5_000})
    Path(record["local_path"]).unlink()
    with pytest.raises(NotStored, match=f"{record['sha256'][:12]}: no local copy"):
        check_stored(cfg.data_dir, expected)


def test_the_cpu_rows_count_only_clips_stored_verified_and_hashing_right(tmp_path: Path) -> None:
    """bench_cpu's checks (daemon_proc): a fault is never a finished offload, and a clip the
    store does not hold under its name, with its recorder's SHA-256, fails the row."""
    went = [{"bay": 1, "state": s, "t": float(t)} for t, s in enumerate(["offloading", "fault"])]
    with pytest.raises(NotStored, match="bay 1 ended in fault"):
        bays_done(went, [1], 0.0)
    assert bays_done([*went[:1], {"bay": 1, "state": "ready", "t": 1.0}], [1], 0.0) == {1: 1.0}
    cfg = dock_config(tmp_path)
    photo = media_dir(tmp_path / "bay1") / clip_name(1, "JPG", "ZFY0000001")
    photo.parent.mkdir(parents=True)
    photo.write_bytes(os.urandom(5_000))
    expected = {photo.name: (hashlib.sha256(photo.read_bytes()).hexdigest(), 5_000)}
    with running(cfg) as (daemon, views):
        simkit.dock(tmp_path / "bay1", simkit.SimRecorder(device_id="ZFY0000001"))
        wait_for(lambda: offloaded(views, [1]), 60, "bay 1 to finish")
        record = next(iter(daemon.services.index.iter_all()))
    proc_check_stored(cfg.data_dir, expected)  # a good run passes
    with pytest.raises(NotStored, match="not stored with its recorder's sha256"):
        proc_check_stored(cfg.data_dir, {"OTHER.JPG": expected[photo.name]})
    stored = Path(record["local_path"])
    stored.chmod(0o640)
    stored.write_bytes(os.urandom(5_000))
    with pytest.raises(NotStored, match="does not hash right"):
        proc_check_stored(cfg.data_dir, expected)
