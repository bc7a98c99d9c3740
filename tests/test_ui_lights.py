"""Bay lights (SPEC 12): the state -> pattern map, the LED class files, and the lights through a docking."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import DockConfig, parse_config
from agent.events import BAY_STATES, Alert, BayView
from agent.findings import Finding
from agent.ui.lights import BayLights, Led, lights_for
from firmware_interface import simkit
from tests.dock import CLOSED_PORT, running, wait_for

SPEC_12 = {
    "empty": ("off", "off"),
    "identifying": ("blink", "off"),
    "validating": ("blink", "off"),
    "offloading": ("blink", "off"),
    "charging": ("on", "on"),
    "ready": ("on", "off"),
    "fault": ("off", "on"),
}


def test_every_bay_state_has_the_lights_spec_12_names() -> None:
    assert set(SPEC_12) == set(BAY_STATES)
    assert {s: lights_for(s) for s in BAY_STATES} == SPEC_12
    assert lights_for("no-such-state") == ("off", "on")  # something is wrong: red


def led_dir(root: Path, name: str, max_brightness: int | None = None) -> Path:
    """A plain directory standing in for /sys/class/leds/NAME."""
    path = root / name
    path.mkdir(parents=True)
    if max_brightness is not None:
        (path / "max_brightness").write_text(f"{max_brightness}\n")
    return path


def read(path: Path, name: str) -> str | None:
    f = path / name
    return f.read_text().strip() if f.exists() else None


def shown(path: Path) -> str:
    """What a person sees on the LED the files describe."""
    if read(path, "trigger") == "timer":
        return "blink"
    return "on" if (read(path, "brightness") or "0") != "0" else "off"


def test_led_writes_the_led_class_files(tmp_path: Path) -> None:
    path = led_dir(tmp_path, "bay1:green", max_brightness=255)
    led = Led(tmp_path, "bay1:green")
    led.show("blink")
    assert (read(path, "trigger"), read(path, "delay_on"), read(path, "delay_off")) == (
        "timer",
        "500",
        "500",
    )
    led.show("on")
    assert (read(path, "trigger"), read(path, "brightness")) == ("none", "255")
    led.show("off")
    assert (read(path, "trigger"), read(path, "brightness")) == ("none", "0")


def test_an_unwritable_led_is_one_warning_and_the_other_led_still_works(tmp_path: Path) -> None:
    red = led_dir(tmp_path, "bay1:red")
    reported: list[tuple[int, Finding]] = []
    lights = BayLights(
        {1: (Led(tmp_path, "bay1:missing"), Led(tmp_path, "bay1:red"))},
        lambda bay, f: reported.append((bay, f)),
    )
    for state in ("identifying", "offloading", "ready", "fault", "empty", "fault"):
        lights.show(1, state)
    assert [(b, f.code, f.severity) for b, f in reported] == [(1, "led_failed", "warning")]
    assert "bay1:missing" in reported[0][1].message
    assert shown(red) == "on"


def dock_with_leds(tmp: Path) -> DockConfig:
    leds = tmp / "leds"
    for n in (1, 2):
        for colour in ("green", "red"):
            led_dir(leds, f"bay{n}:{colour}", max_brightness=1)
    return parse_config(
        {
            "dock": {"id": "dock-leds", "data_dir": str(tmp / "data")},
            "bay": [
                {
                    "number": n,
                    "sim_dir": str(tmp / f"bay{n}"),
                    "led_green": f"bay{n}:green",
                    "led_red": f"bay{n}:red",
                }
                for n in (1, 2)
            ],
            "recorders": {"leds_dir": str(leds)},
            "policy": {
                "require_synced_clock": False,
                "disk_reserve_bytes": 0,
                "delete_from_recorder": "never",
            },
            "mqtt": {"port": CLOSED_PORT},
            "ui": {"listen": ""},
        }
    )


class LightsSeen:
    """After each bay view, what the bay's LED files show (lights subscribed before this)."""

    def __init__(self, leds: Path) -> None:
        self.leds = leds
        self.seen: list[tuple[int, str, str, str]] = []
        self.alerts: list[Alert] = []

    def __call__(self, item: Any) -> None:
        if isinstance(item, Alert):
            self.alerts.append(item)
        if isinstance(item, BayView):
            n = item.number
            green, red = shown(self.leds / f"bay{n}:green"), shown(self.leds / f"bay{n}:red")
            self.seen.append((n, item.state, green, red))

    def of(self, bay: int, state: str) -> set[tuple[str, str]]:
        return {(g, r) for n, s, g, r in self.seen if n == bay and s == state}


def test_lights_through_a_docking(tmp_path: Path) -> None:
    cfg = dock_with_leds(tmp_path)
    leds = Path(cfg.recorders.leds_dir)
    now = datetime.now()
    good = simkit.SimRecorder(
        battery_pct=95, clips=simkit.shift(now - timedelta(hours=1), [1, 1, 1])
    )
    broken = simkit.SimRecorder(
        "ZFY0099999", "099999", battery_pct=250, clips=[simkit.SimClip(now, 1)]
    )
    simkit.build(tmp_path / "bay1", good, docked=False)
    simkit.build(tmp_path / "bay2", broken, docked=False)
    with running(cfg) as (daemon, views):
        seen = LightsSeen(leds)
        daemon.services.bus.subscribe(seen)
        simkit.dock(tmp_path / "bay1", good)
        simkit.dock(tmp_path / "bay2", broken)
        wait_for(lambda: seen.of(1, "ready"), 60, "bay 1 ready")
        wait_for(lambda: seen.of(2, "fault"), 60, "bay 2 fault")
        blink_ms = read(leds / "bay1:green", "delay_on")
    assert seen.of(1, "offloading") == {("blink", "off")}, seen.seen
    assert blink_ms == "500"
    assert seen.of(1, "ready") == {("on", "off")}, seen.seen
    assert "battery_impossible" in [f.code for f in daemon.bays[2].view.findings]
    assert seen.of(2, "fault") == {("off", "on")}, seen.seen
    assert not [a for a in seen.alerts if a.code == "led_failed"]
    after_stop = {shown(p) for p in leds.iterdir()}
    assert after_stop == {"off"}  # the daemon stopped: nobody drives the lights


def test_a_missing_led_never_faults_the_bay(tmp_path: Path) -> None:
    cfg = dock_with_leds(tmp_path)
    leds = Path(cfg.recorders.leds_dir)
    (leds / "bay1:green" / "max_brightness").unlink()
    (leds / "bay1:green").rmdir()  # led_green names an LED the kernel does not have
    rec = simkit.SimRecorder(
        battery_pct=95, clips=[simkit.SimClip(datetime.now() - timedelta(hours=1), 1)]
    )
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: daemon.bays[1].view.state == "ready", 60, "bay 1 ready")
    failed = [a for a in views.alerts if a.code == "led_failed"]
    assert len(failed) == 1 and failed[0].severity == "warning", views.alerts
    assert failed[0].fields == {"bay": 1, "led": "bay1:green"}
    assert "fault" not in views.states(1)


@pytest.mark.parametrize(
    ("bay", "needle"),
    [
        ({"led_green": "../../etc/passwd"}, "bay[0].led_green = '../../etc/passwd'"),
        ({"led_red": ".."}, "bay[0].led_red = '..'"),
    ],
)
def test_led_names_that_leave_leds_dir_are_refused(
    tmp_path: Path, bay: dict[str, str], needle: str
) -> None:
    from agent.schema import ConfigError

    data = {
        "dock": {"id": "d", "data_dir": str(tmp_path)},
        "bay": [{"number": 1, "sim_dir": str(tmp_path), **bay}],
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert any(p.startswith(needle) for p in err.value.problems), err.value.problems


def test_blinking_leaves_the_kernels_default_delays_alone(tmp_path: Path) -> None:
    """The timer trigger's delay files are root's: they are written only when they differ."""
    path = led_dir(tmp_path, "bay1:green")
    for name in ("delay_on", "delay_off"):
        (path / name).write_text("500\n")
        os.utime(path / name, (1_000_000, 1_000_000))
    Led(tmp_path, "bay1:green").show("blink")
    assert read(path, "trigger") == "timer"
    assert [(path / n).stat().st_mtime for n in ("delay_on", "delay_off")] == [1_000_000] * 2
