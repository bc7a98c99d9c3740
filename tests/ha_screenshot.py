"""Make docs/monitoring/ha-dashboard.png: Home Assistant's own dashboard of a dock, nothing hand-made.

    .venv/bin/python -m tests.ha_screenshot [OUT.png]

A Mosquitto, Home Assistant 2024.1.6 with its frontend (scripts/test-tools.sh), onboarded and
given MQTT as tests/test_ha_real.py does, and a dock with two simulated bays (one recorder
charging after its offload, one bay empty, the sync backlog alert on). Headless Chromium logs
in with the onboarding's tokens (localStorage `hassTokens`, through the DevTools protocol) and
screenshots the auto-generated dashboard.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from agent.config import parse_config
from firmware_interface import simkit
from tests.broker import free_port, running_broker
from tests.dock import running, wait_for
from tests.ha_kit import CLIENT_ID, HomeAssistant
from tests.tool_cache import hass_binary

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--window-size=1280,1000", "--lang=en-US",
]  # fmt: skip


# Onboarding's later steps (home location, analytics, integrations) marked done beforehand:
# once the owner is made by the API, the frontend shows the dashboard, not the wizard.
SKIP_WIZARD = {
    "version": 4, "minor_version": 1, "key": "onboarding",
    "data": {"done": ["core_config", "analytics", "integration"]},
}  # fmt: skip
CDP = """
import asyncio, base64, json, sys
import aiohttp

async def main(port, origin, tokens, out):
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        async with s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            n = 0
            async def call(method, **params):
                nonlocal n
                n += 1
                await ws.send_json({"id": n, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == n:
                        return msg.get("result")
            await call("Page.enable")
            await call("Page.navigate", url=origin + "/manifest.json")
            await asyncio.sleep(1)
            script = "localStorage.setItem('hassTokens', " + json.dumps(tokens) + ")"
            await call("Runtime.evaluate", expression=script)
            await call("Page.navigate", url=origin + "/lovelace/0")
            await asyncio.sleep(20)
            shot = await call("Page.captureScreenshot", format="png")
            open(out, "wb").write(base64.b64decode(shot["data"]))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]))
"""


def shoot(ha: HomeAssistant, out: Path, profile: Path) -> None:
    """Log Chromium in with the onboarding tokens (localStorage hassTokens) and screenshot."""
    tokens = json.dumps({
        "hassUrl": ha.url, "clientId": CLIENT_ID, "access_token": ha.token,
        "refresh_token": ha.refresh_token, "token_type": "Bearer", "expires_in": 1800,
        "expires": int(time.time() * 1000) + 1_700_000,
    })  # fmt: skip
    port = free_port()
    browser = subprocess.Popen(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        python = ha.hass.parent / "python"  # Home Assistant's venv has aiohttp
        subprocess.run(
            [str(python), "-c", CDP, str(port), ha.url, tokens, str(out)], check=True, timeout=120
        )
    finally:
        browser.terminate()
        browser.wait(20)


def dock_config(tmp: Path, port: int) -> object:
    return parse_config({
        "dock": {"id": "dock-01", "data_dir": str(tmp / "data")},
        "bay": [{"number": n, "sim_dir": str(tmp / f"bay{n}")} for n in (1, 2)],
        "policy": {"require_synced_clock": False, "disk_reserve_bytes": 0,
                   "delete_from_recorder": "never", "sync_backlog_alert_s": 1},
        "mqtt": {"host": "127.0.0.1", "port": port},
        "ui": {"listen": "", "language": "zh-CN"},
    })  # fmt: skip


def main(out: Path) -> None:
    hass, why = hass_binary()
    if hass is None:
        sys.exit(why)
    with tempfile.TemporaryDirectory() as tmp_name, running_broker(Path(tmp_name) / "b") as b:
        tmp = Path(tmp_name)
        ha = HomeAssistant(hass, tmp / "ha")
        try:
            storage = tmp / "ha" / "config" / ".storage"
            storage.mkdir(parents=True)
            (storage / "onboarding").write_text(json.dumps(SKIP_WIZARD))
            ha.start(extra="frontend:\n")
            ha.onboard()
            ha.add_mqtt(b)
            rec = simkit.SimRecorder(
                battery_pct=72, charge_pct_per_min=0.5, clock_offset_s=3.2,
                clips=simkit.shift(datetime.now() - timedelta(hours=3), [2, 2, 1]),
            )  # fmt: skip
            simkit.build(tmp / "bay1", rec)
            with running(dock_config(tmp, b.port)) as (daemon, _views):  # type: ignore[arg-type]
                wait_for(lambda: daemon.bays[1].view.state == "charging", 60, "bay 1 charging")
                wait_for(lambda: ha.states("dock_01_problem").get(
                    "binary_sensor.dock_01_problem", {}).get("state") == "on", 30, "the alert")  # fmt: skip
                time.sleep(2)
                shoot(ha, out, tmp / "chromium")
            assert ha.problems() == [], ha.problems()
        finally:
            ha.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/monitoring/ha-dashboard.png").resolve())
