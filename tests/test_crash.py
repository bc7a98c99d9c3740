"""kill -9 at random moments during offload, then restart: nothing lost, nothing twice."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from agent.evidence.custody import verify_chain
from agent.evidence.index import ClipIndex
from firmware_interface import simkit
from tests.dock import wait_for


def write_config(tmp: Path) -> Path:
    cfg = tmp / "dock.toml"
    cfg.write_text(
        f'[dock]\nid = "dock-crash"\ndata_dir = "{tmp / "data"}"\n'
        f'[[bay]]\nnumber = 1\nsim_dir = "{tmp / "bay1"}"\n'
        "[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
        'delete_from_recorder = "after_local_verify"\n'
        "[mqtt]\nport = 1\n"  # no broker: the dock works offline
        '[ui]\nlisten = ""\n'
    )
    return cfg


def start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(cfg)], stdout=out, stderr=out, env=env
        )


def bay_state(data: Path, pid: int) -> str | None:
    """Bay 1's state as written by the daemon process `pid`."""
    try:
        state = json.loads((data / "state" / "bays.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state["bays"].get("1", {}).get("state") if state.get("pid") == pid else None


def test_kill9_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    now = datetime.now()
    rec = simkit.SimRecorder(clips=simkit.shift(now - timedelta(hours=3), [2] * 6))
    bay = tmp_path / "bay1"
    originals = simkit.build(bay, rec, docked=False)
    for i in range(8):  # large files so that kills land mid-copy too
        big = (
            bay
            / "DCIM"
            / "100MEDIA"
            / f"{rec.device_id}_{rec.officer_id}_{now:%Y%m%d%H%M%S}_9{i}.MP4"
        )
        big.write_bytes(os.urandom(32 * 2**20))
        originals.append(big)
    expected = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in originals}
    simkit.dock(bay, rec)
    cfg = write_config(tmp_path)
    log = tmp_path / "agent.log"
    for _attempt in range(4):
        proc = start(cfg, log)
        time.sleep(rng.uniform(0.5, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc = start(cfg, log)
    try:
        wait_for(
            lambda: bay_state(tmp_path / "data", proc.pid) in ("charging", "ready"),
            120,
            f"final run to finish (seed {seed}); log:\n{log.read_text()[-3000:]}",
        )
        index = ClipIndex(tmp_path / "data")
        wait_for(
            lambda: (
                all(r.get("analysed") for r in index.iter_all())
                and len(list(index.iter_all())) == len(expected)
            ),
            60,
            "analysis",
        )
        records = list(index.iter_all())
        index.close()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    assert sorted(r["sha256"] for r in records) == sorted(expected), f"seed {seed}"
    for r in records:
        assert hashlib.sha256(Path(r["local_path"]).read_bytes()).hexdigest() == r["sha256"]
    stored = [
        p
        for p in (tmp_path / "data" / "evidence").rglob("*")
        if p.is_file() and ".incoming" not in p.parts and not p.name.endswith(".thumb.jpg")
    ]
    assert len(stored) == len(expected), f"duplicates in the store: {sorted(stored)}"
    assert list((tmp_path / "data" / "evidence" / ".incoming").iterdir()) == []
    assert verify_chain(tmp_path / "data" / "custody.jsonl") == []
    assert not any(p.exists() for p in originals), "all verified clips left the recorder"
    assert "Traceback" not in log.read_text()
