"""`dock-agent demo` runs end to end on this machine and says every clip arrived intact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.broker import mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_demo_runs_end_to_end_and_keeps_its_page_until_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "agent", "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("--keep: the dock serves"):
                break
        out = "".join(lines)
        kept = re.search(r"--keep: the dock serves (http://127\.0\.0\.1:\d+/)", out)
        assert kept, out[-3000:] + (proc.stderr.read() if proc.stderr else "")
        with urllib.request.urlopen(kept.group(1), timeout=10) as resp:
            page = resp.read().decode()
        with urllib.request.urlopen(kept.group(1) + "api/status", timeout=10) as resp:
            status = json.loads(resp.read())
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest[-3000:] + err[-3000:]
    assert f"status page         : {kept.group(1)}" in out
    assert "RESULT: every clip is at central, byte for byte" in out
    assert "custody chain: intact" in out
    fingerprint = re.search(r"dock key +: (SHA256:[A-Za-z0-9+/]{43})", out)
    assert fingerprint, out[-3000:]
    assert "receipts verified    : 8 of 8 acks carried central's signed receipt" in out
    assert "recorder files freed : 8, each only after its verified receipt" in out
    assert re.search(
        r"chain at central +: [1-9]\d* of \d+ custody entries .*receive verify: OK", out
    )
    assert out.count("at central, hash ok") == 8
    assert "cause low_battery" in out and "late_offload" in out
    assert "Traceback" not in err
    assert "Not authorized" not in out + err  # the shipped ACL grants what the shipped dock sends
    assert "WARNING" not in out + rest + err, "the demo, Ctrl-C included, warns of nothing"
    assert "就绪" in page and status["dock_id"] == "demo-dock"
    assert sorted(status["bays"]) == ["1", "2"]
    assert all(b.get("device_id") for b in status["bays"].values()), status["bays"]
