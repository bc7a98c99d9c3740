"""`dock-agent demo` runs end to end on this machine and says every clip arrived intact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.broker import mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "RESULT: every clip is at central, byte for byte" in out
    assert "custody chain: intact" in out
    assert out.count("at central, hash ok") == 8
    assert "cause low_battery" in out and "late_offload" in out
    assert "Traceback" not in proc.stderr
