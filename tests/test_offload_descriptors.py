"""Bays offloading photos at once stay within the process's open-files limit.

systemd gives a service a soft RLIMIT_NOFILE of 1,024. Each bay's pipeline holds a batch's
recorder and temp files, the next batch opened ahead and the batch before being proved: four
bays of photos at 128 a batch held 2,205 descriptors and ended in `fault` (EMFILE) under that
limit. Batches are now sized from the limit and the number of bays (batches.files_per_batch).
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from pathlib import Path

from agent.dock.batches import FD_RESERVE, MAX_BATCH_FILES, files_per_batch
from firmware_interface import simkit
from tests.bench.bench_cpu import clip_name
from tests.bench.bench_offload import media_dir
from tests.bench.daemon_proc import DaemonProc, check_stored

BAYS, PHOTOS, LIMIT = 4, 150, 400


def test_batches_shrink_with_the_bays_and_the_limit_and_never_to_nothing() -> None:
    assert files_per_batch(1 << 20, 8) == MAX_BATCH_FILES
    assert files_per_batch(1024, 1) == MAX_BATCH_FILES
    assert files_per_batch(1024, 4) == (1024 - FD_RESERVE) // (4 * 5) == 38
    assert files_per_batch(1024, 8) == 19
    assert files_per_batch(FD_RESERVE, 8) == 1  # a tiny limit still offloads, a file at a time
    assert files_per_batch(0, 0) == 1


def test_four_bays_of_photos_under_a_low_open_files_limit_all_finish_stored(
    tmp_path: Path,
) -> None:
    expected: dict[str, tuple[str, int]] = {}
    for bay in range(1, BAYS + 1):
        folder = media_dir(tmp_path / f"bay{bay}")
        folder.mkdir(parents=True)
        for seq in range(1, PHOTOS + 1):
            name = clip_name(seq, "JPG", f"ZFY000000{bay}")
            data = os.urandom(20_000)
            (folder / name).write_bytes(data)
            expected[name] = (hashlib.sha256(data).hexdigest(), len(data))
    config = {
        "dock": {"id": "dock-fds", "data_dir": str(tmp_path / "data")},
        "bay": [{"number": b, "sim_dir": str(tmp_path / f"bay{b}")} for b in range(1, BAYS + 1)],
        "policy": {"require_synced_clock": False, "disk_reserve_bytes": 0},
        "mqtt": {"port": 1},
        "ui": {"listen": ""},
    }
    daemon = DaemonProc(config, tmp_path)
    try:
        daemon.wait_ready()
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (LIMIT, hard))
        since = time.monotonic()
        for bay in range(1, BAYS + 1):
            simkit.dock(tmp_path / f"bay{bay}", simkit.SimRecorder(device_id=f"ZFY000000{bay}"))
        daemon.finished(list(range(1, BAYS + 1)), since, timeout=120)  # a fault raises
    finally:
        daemon.stop()
    check_stored(tmp_path / "data", expected)
