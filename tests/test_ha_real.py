"""A real Home Assistant 2024.1.6 on the dock's discovery configs (SPEC 12), as IT would use it.

Home Assistant runs from its own virtual environment (scripts/test-tools.sh), onboarded by its
REST API, with the MQTT integration added by its config flow on the shipped site broker (TLS
with the site's CA uploaded, a password, the ACL: it logs in as `it`, SPEC 11). A dock process
with two simulated bays docks and undocks a recorder, is killed with SIGKILL, and comes back
with one bay less. Everything is asserted through Home Assistant's REST and websocket APIs
(the removed bay's retained state through its own MQTT client), and its log must hold no
warning or error."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.demo.site import make_site
from agent.events import BAY_STATES
from firmware_interface import simkit
from tests.broker import free_port, mosquitto_binary
from tests.dock import wait_for
from tests.ha_kit import HomeAssistant, StateWatch
from tests.tool_cache import hass_binary

HASS, WHY = hass_binary()
pytestmark = [
    pytest.mark.skipif(
        mosquitto_binary() is None or shutil.which("openssl") is None,
        reason="mosquitto or openssl is not installed (the site broker needs both)",
    ),
    pytest.mark.skipif(HASS is None, reason=WHY),
]
DOCK = "dock-ha"
ALL = ("queue_clips", "oldest_unsynced_age", "disk_free", "custody_seq")
FLAGS = ("problem", "clock_synced", "connectivity")
BAY = ("state", "officer", "battery", "progress")


@dataclass
class Scene:
    """Home Assistant on the site broker, and the dock under test (a process we may kill)."""

    ha: HomeAssistant
    site: Scene
    tmp: Path
    dock: subprocess.Popen[bytes] | None = None
    page_port: int = 0

    def config(self, bays: int) -> Path:
        path = self.tmp / f"dock-{bays}.toml"
        bay_tables = "".join(
            f'[[bay]]\nnumber = {n}\nsim_dir = "{self.tmp / f"bay{n}"}"\n'
            for n in range(1, bays + 1)
        )
        path.write_text(
            f'[dock]\nid = "{DOCK}"\ndata_dir = "{self.tmp / "data"}"\n{bay_tables}'
            "[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
            'delete_from_recorder = "never"\nsync_backlog_alert_s = 1\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.site.port}\nusername = "{DOCK}"\n'
            f'password_file = "{self.site.password_files[DOCK]}"\ntls_ca = "{self.site.ca}"\n'
            f'[ui]\nlisten = "0.0.0.0:{self.page_port}"\nlanguage = "zh-CN"\n'
        )
        return path

    def start_dock(self, bays: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.tmp / "dock.log", "ab") as out:
            self.dock = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "-c", str(self.config(bays))],
                stdout=out,
                stderr=out,
                env=env,
            )

    def kill_dock(self) -> None:
        if self.dock and self.dock.poll() is None:
            os.kill(self.dock.pid, signal.SIGKILL)
            self.dock.wait(10)


def test_home_assistant_through_a_docking_a_kill_9_and_a_removed_bay(site: Scene) -> None:
    """One scenario (its steps build on each other, so it is one test under pytest-xdist)."""
    _docking(site)
    _killed(site)
    _bay_removed(site)
    assert site.ha.problems() == []  # start, docking, kill -9 and the removed bay all logged
    assert DOCK.replace("-", "_") in site.ha.log.read_text()  # the log that saw our entities


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Scene]:
    """The shipped site broker (TLS, passwords, the ACL; users dock-ha and it) and Home
    Assistant logged in to it as it, with the site's CA."""
    assert HASS is not None
    made = make_site(tmp_path / "site", free_port(), [DOCK])
    with open(made.root / "mosquitto.log", "wb") as log:
        broker = subprocess.Popen([mosquitto_binary() or "", "-c", str(made.conf)], stdout=log,
                                  stderr=log)  # fmt: skip
    ha = HomeAssistant(HASS, tmp_path / "ha")
    try:
        wait_for(lambda: _listening(made.port, broker), 10, "the site broker")
        ha.start()
        ha.onboard()
        password = made.password_files[made.it].read_text().strip()
        ha.add_mqtt_tls("127.0.0.1", made.port, made.it, password, made.ca)
        scene = Scene(ha, made, tmp_path, page_port=free_port())
        yield scene
        scene.kill_dock()
    finally:
        ha.stop()
        broker.terminate()
        broker.wait(10)


def _listening(port: int, broker: subprocess.Popen[bytes]) -> bool:
    assert broker.poll() is None, "the site broker exited"
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def entity(kind: str, name: str) -> str:
    return f"{kind}.{DOCK.replace('-', '_')}_{name}"


def every_entity(bays: int) -> list[str]:
    found = sensors(*ALL) + [entity("binary_sensor", n) for n in FLAGS]
    for n in range(1, bays + 1):
        found += sensors(*BAY, bay=n)
    return found


def sensors(*names: str, bay: int | None = None) -> list[str]:
    return [entity("sensor", f"bay{bay}_{n}" if bay else n) for n in names]


def until(ha: HomeAssistant, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Poll Home Assistant's states until `check` holds; they are returned."""
    box: dict[str, Any] = {}

    def ok() -> bool:
        box.update(states=ha.states(DOCK.replace("-", "_")))
        return check(box["states"])

    try:
        wait_for(ok, 45, what)
    except AssertionError:
        raise AssertionError(f"{what}; Home Assistant has {json.dumps(box, indent=1)}") from None
    return dict(box["states"])


def state(states: dict[str, Any], entity_id: str) -> str | None:
    return states.get(entity_id, {}).get("state")


def _docking(site: Scene) -> None:
    """Entities, devices and live states through a docking and an undocking."""
    ha = site.ha
    rec = simkit.SimRecorder(
        battery_pct=80, charge_pct_per_min=3.0, clock_offset_s=5.0,
        clips=simkit.shift(datetime.now() - timedelta(hours=2), [1, 1]),
    )  # fmt: skip
    simkit.build(site.tmp / "bay1", rec, docked=False)
    site.start_dock(bays=2)
    expected = every_entity(bays=2)
    states = until(ha, lambda s: all(state(s, e) not in (None, "unavailable") for e in expected),
                   "every entity, available")  # fmt: skip
    assert sorted(states) == sorted(expected)
    assert state(states, entity("sensor", "bay2_state")) == "empty"
    assert state(states, entity("sensor", "bay2_progress")) == "unknown"  # not 0 %
    assert state(states, entity("binary_sensor", "connectivity")) == "on"
    name = states[entity("sensor", "bay1_state")]["attributes"]["friendly_name"]
    assert name == f"{DOCK} 仓位 1 状态", name  # [ui] language = zh-CN
    watch = StateWatch(ha, entity("sensor", "bay1_state"))
    simkit.dock(site.tmp / "bay1", rec)
    states = until(ha, lambda s: state(s, entity("sensor", "bay1_state")) == "charging"
                   and state(s, entity("sensor", "queue_clips")) == "2", "bay 1 charging")  # fmt: skip
    _docked_states(states, rec)
    live = watch.states()  # what a dashboard showed live, each state as the dock published it
    assert live == ["identifying", "validating", "offloading", "charging"], live
    _devices(site)
    states = until(ha, lambda s: state(s, entity("binary_sensor", "problem")) == "on",
                   "the sync_backlog alert")  # fmt: skip
    problem = states[entity("binary_sensor", "problem")]["attributes"]
    assert problem["alerts"] == ["sync_backlog"] and problem["messages"] == ["上传积压"]
    simkit.undock(site.tmp / "bay1")
    states = until(ha, lambda s: state(s, entity("sensor", "bay1_state")) == "empty", "undocked")
    assert state(states, entity("sensor", "bay1_progress")) == "unknown"
    assert state(states, entity("sensor", "bay1_battery")) == "unknown"


def _docked_states(states: dict[str, Any], rec: simkit.SimRecorder) -> None:
    battery = state(states, entity("sensor", "bay1_battery"))
    assert battery is not None and battery.isdigit() and 80 <= int(battery) <= 100, battery
    assert state(states, entity("sensor", "bay1_progress")) == "100"
    assert state(states, entity("sensor", "bay1_officer")) == rec.officer_id
    attrs = states[entity("sensor", "bay1_state")]["attributes"]
    assert attrs["device_id"] == rec.device_id and attrs["clips_total"] == 2
    assert abs(attrs["clock_offset_s"] - 5.0) < 2
    assert "battery_charging" in [f["code"] for f in attrs["findings"]]
    # 2024.1 drops `options` from MQTT sensors without a word (later releases keep it)
    assert attrs["device_class"] == "enum" and attrs.get("options", list(BAY_STATES)) == list(
        BAY_STATES
    )
    assert int(state(states, entity("sensor", "custody_seq")) or 0) > 0
    assert float(state(states, entity("sensor", "disk_free")) or 0) > 0
    assert states[entity("sensor", "disk_free")]["attributes"]["unit_of_measurement"] == "GB"


def _devices(site: Scene) -> None:
    registry = site.ha.ws("config/device_registry/list", "config/entity_registry/list")
    ours = {
        d["id"]: d
        for d in registry["config/device_registry/list"]
        if any(i[1].startswith(f"dock-agent_{DOCK}") for i in d["identifiers"])
    }
    by_name = {d["name"]: d for d in ours.values()}
    assert sorted(by_name) == sorted([f"采集站 {DOCK}", f"{DOCK} 仓位 1", f"{DOCK} 仓位 2"])
    dock = by_name[f"采集站 {DOCK}"]
    for n in (1, 2):
        assert by_name[f"{DOCK} 仓位 {n}"]["via_device_id"] == dock["id"]
    assert dock["configuration_url"] == f"http://{os.uname().nodename}:{site.page_port}/"
    categories = {
        e["entity_id"]: e["entity_category"]
        for e in registry["config/entity_registry/list"]
        if e["device_id"] in ours
    }
    assert categories[entity("sensor", "custody_seq")] == "diagnostic"
    assert categories[entity("binary_sensor", "clock_synced")] == "diagnostic"
    assert categories[entity("sensor", "bay1_state")] is None


def _killed(site: Scene) -> None:
    """kill -9: every entity unavailable, connectivity off."""
    assert site.dock is not None and site.dock.poll() is None
    site.kill_dock()
    states = until(
        site.ha,
        lambda s: (
            state(s, entity("binary_sensor", "connectivity")) == "off"
            and all(
                state(s, e) == "unavailable" for e in every_entity(2) if "connectivity" not in e
            )
        ),
        "every entity unavailable after kill -9",
    )
    assert len(states) == len(every_entity(2))


def _bay_removed(site: Scene) -> None:
    """Restarted without bay 2: no entity, device or retained state of it is left."""
    site.start_dock(bays=1)
    states = until(
        site.ha,
        lambda s: (
            sorted(s) == sorted(every_entity(1))
            and state(s, entity("sensor", "bay1_state")) == "empty"
        ),
        "bay 2's entities gone, the rest available",
    )
    assert state(states, entity("binary_sensor", "connectivity")) == "on"
    registry = site.ha.ws("config/device_registry/list", "config/entity_registry/list")
    names = [d["name"] for d in registry["config/device_registry/list"]]
    assert f"{DOCK} 仓位 1" in names and f"{DOCK} 仓位 2" not in names
    assert not [e for e in registry["config/entity_registry/list"] if "bay2" in e["entity_id"]]
    left = site.ha.retained(f"dock/{DOCK}/#")  # what Home Assistant's MQTT client is given
    assert f"dock/{DOCK}/bay/1" in left and f"dock/{DOCK}/bay/2" not in left, sorted(left)
