"""The test of the power-cut test: a store with one directory fsync removed must fail it.

Deterministic: one docking in the strict-POSIX model, the power cut once the first recorder
file was deleted (so clips were indexed, their copies placed and custody written), then the
same SPEC 9 check as after every cut of test_dock; it must report the indexed clips lost.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.powercut import fuse_unavailable
from tests.powercut.conftest import MakeLayer, alive
from tests.powercut.patience import patience
from tests.powercut.test_dock import Recorder, after_cut_problems, dock_config
from tests.powercut.zygote import Zygote

pytestmark = [
    pytest.mark.powercut,
    pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable())),
]


@pytest.mark.parametrize("broken", ["store-dir-fsync", None])
def test_a_missing_directory_fsync_fails_the_power_cut_check(
    tmp_path: Path, zygote: Zygote, layers: MakeLayer, broken: str | None
) -> None:
    (tmp_path / "back").mkdir()
    data = tmp_path / "data"
    fs = layers(tmp_path / "back", data, journal=False)
    rec = Recorder(tmp_path / "bay1", random.Random(16))
    rec.refill(photos=12)
    cfg = dock_config(tmp_path / "dock.toml", data, rec)
    log = tmp_path / "agent.log"
    fs.mount()
    pid = zygote.start(["run", "-c", str(cfg)], log, {"POWERCUT_BREAK": broken or ""})
    deadline = time.monotonic() + patience(60)
    while all(path.exists() for path in rec.originals):
        assert alive(pid), f"the daemon ended; its log:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no recorder file was deleted in time"
        time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    report = fs.cut()
    assert zygote.wait(pid) == -signal.SIGKILL
    fs.mount()
    problems = after_cut_problems(data, rec)
    fs.unmount()
    print(f"{broken}: {report}; {len(problems)} problems: {problems[:3]}")
    if broken is None:  # the control: the real store keeps every indexed clip
        assert problems == []
    else:
        assert any("is not on disk" in p for p in problems), (
            f"the power-cut check missed a store without its directory fsync ({broken}): {problems}"
        )
