"""A real Home Assistant for tests: started on a free port, onboarded and given MQTT by its APIs."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.broker import Broker, free_port

CONFIG = """\
homeassistant:
  name: dock-agent test
  latitude: 31.23
  longitude: 121.47
  elevation: 4
  unit_system: metric
  time_zone: Asia/Shanghai
  country: CN
  currency: CNY
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: info
onboarding:
config:
api:
websocket_api:
{extra}"""
CLIENT_ID = "http://127.0.0.1/"  # an IndieAuth client id: any URL on a local host
# Home Assistant's own start-up lines that are not about us (it runs with --skip-pip on purpose)
EXPECTED = (re.compile(r"\[homeassistant\.bootstrap\] Skipping pip installation"),)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (WARNING|ERROR|CRITICAL) ")

WS_SCRIPT = """
import asyncio, json, sys
import aiohttp
async def main(url, token, kinds):
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        out = {}
        for n, kind in enumerate(kinds, 1):
            await ws.send_json({"id": n, "type": kind})
            out[kind] = (await ws.receive_json())["result"]
        print(json.dumps(out))
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""

WATCH_SCRIPT = """
import asyncio, json, sys
import aiohttp
async def main(url, token, entity_id):
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
        print("subscribed", flush=True)
        async for msg in ws:
            data = json.loads(msg.data).get("event", {}).get("data", {})
            if data.get("entity_id") == entity_id and data.get("new_state"):
                print(data["new_state"]["state"], flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""

RETAINED_SCRIPT = """
import asyncio, json, sys
import aiohttp
async def main(url, token, topic_filter):
    got = {}
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        await ws.send_json({"id": 1, "type": "mqtt/subscribe", "topic": topic_filter})
        try:
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), 1.5)
                event = msg.get("event") or {}
                if event.get("retain"):
                    got[event["topic"]] = event["payload"]
        except asyncio.TimeoutError:
            pass
    print(json.dumps(got))
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


class StateWatch:
    """Every state Home Assistant gives one entity, from its websocket's state_changed events."""

    def __init__(self, ha: HomeAssistant, entity_id: str) -> None:
        self.proc = subprocess.Popen(
            [str(ha.hass.parent / "python"), "-c", WATCH_SCRIPT, ha.ws_url, ha.token, entity_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "subscribed\n"

    def states(self) -> list[str]:
        """Stop watching; the states seen, in order, repeats folded."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        seen: list[str] = []
        for state in out.split():
            if not seen or seen[-1] != state:
                seen.append(state)
        return seen


@dataclass
class HomeAssistant:
    """One Home Assistant process with its own configuration directory."""

    hass: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    refresh_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "config" / "home-assistant.log"

    def start(self, extra: str = "", timeout: float = 120.0) -> float:
        """Start and wait until the HTTP API answers; returns the seconds it took."""
        config = self.workdir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "configuration.yaml").write_text(CONFIG.format(port=self.port, extra=extra))
        started = time.monotonic()
        out = open(self.workdir / "hass.out", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [str(self.hass), "-c", str(config), "--skip-pip", "--log-no-color"],
            stdout=out,
            stderr=out,
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited: {self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/onboarding", timeout=2).ok:
                    return time.monotonic() - started
            time.sleep(0.3)
        raise RuntimeError(f"Home Assistant did not answer in {timeout} s: {self.tail()}")

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-3000:] or (self.workdir / "hass.out").read_text(errors="replace")[-3000:]

    def onboard(self) -> None:
        """Create the owner (onboarding/users) and get a token (the auth code flow)."""
        user = {"client_id": CLIENT_ID, "name": "IT", "username": "it", "password": "it-pass-1"}
        user["language"] = "en"
        answer = requests.post(f"{self.url}/api/onboarding/users", json=user, timeout=30)
        answer.raise_for_status()
        token = requests.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": answer.json()["auth_code"],
                "client_id": CLIENT_ID,
            },
            timeout=30,
        )
        token.raise_for_status()
        self.token = token.json()["access_token"]
        self.refresh_token = token.json()["refresh_token"]

    def add_mqtt(self, broker: Broker) -> dict[str, Any]:
        """The MQTT integration by its config flow, on `broker`; returns the flow's result."""
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow["step_id"] == "broker", flow
        result = self.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": broker.host, "port": broker.port},
        )
        assert result["type"] == "create_entry", result
        return result

    def add_mqtt_tls(self, host: str, port: int, user: str, password: str, ca: Path) -> None:
        """MQTT by its config flow on a TLS broker with a password and a private CA, as IT
        would click it: advanced options, the CA uploaded (POST /api/file_upload)."""
        basic = {"broker": host, "port": port, "username": user, "password": password}
        flow = self.post(
            "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": True}
        )
        step = f"/api/config/config_entries/flow/{flow['flow_id']}"
        form = self.post(step, {**basic, "advanced_options": True})
        assert form["type"] == "form", form
        # Choosing a custom CA shows its upload field (the client id keeps the options open;
        # the site broker makes it the user name anyway).
        advanced = {**basic, "client_id": user, "set_ca_cert": "custom"}
        form = self.post(step, advanced)
        assert "certificate" in [f["name"] for f in form["data_schema"]], form
        with open(ca, "rb") as fh:
            upload = requests.post(
                f"{self.url}/api/file_upload",
                files={"file": ("ca.crt", fh)},
                headers=self._headers(),
                timeout=30,
            )
        upload.raise_for_status()
        result = self.post(step, {**advanced, "certificate": upload.json()["file_id"]})
        assert result["type"] == "create_entry", result

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, data: dict[str, Any]) -> Any:
        answer = requests.post(self.url + path, json=data, headers=self._headers(), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every entity state whose object id starts with `prefix`, by entity id."""
        answer = requests.get(f"{self.url}/api/states", headers=self._headers(), timeout=30)
        answer.raise_for_status()
        return {
            s["entity_id"]: s
            for s in answer.json()
            if s["entity_id"].partition(".")[2].startswith(prefix)
        }

    def template(self, template: str) -> str:
        """What Home Assistant renders for `template` (POST /api/template)."""
        answer = requests.post(
            f"{self.url}/api/template",
            json={"template": template},
            headers=self._headers(),
            timeout=30,
        )
        answer.raise_for_status()
        return answer.text

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    def ws(self, *kinds: str) -> dict[str, Any]:
        """Results of websocket commands (e.g. config/device_registry/list), by their type."""
        python = self.hass.parent / "python"
        out = subprocess.run(
            [str(python), "-c", WS_SCRIPT, self.ws_url, self.token, *kinds],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(out.stdout))

    def retained(self, topic_filter: str) -> dict[str, str]:
        """The retained messages under `topic_filter`, as Home Assistant's own MQTT client gets
        them (websocket mqtt/subscribe): topic -> payload."""
        out = subprocess.run(
            [str(self.hass.parent / "python"), "-c", RETAINED_SCRIPT, self.ws_url, self.token,
             topic_filter],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return dict(json.loads(out.stdout))

    def problems(self, since: int = 0) -> list[str]:
        """Warning and error lines of Home Assistant's log (from byte `since`), less its own."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        return [
            line
            for line in text.splitlines()
            if LOG_LINE.match(line) and not any(p.search(line) for p in EXPECTED)
        ]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
