"""Bay lights through the Linux LED class (SPEC 12): a pure state -> pattern map and its driver."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.config import DockConfig
from agent.events import BayView, EventBus
from agent.findings import Finding, warning

logger = logging.getLogger(__name__)

Pattern = Literal["off", "on", "blink"]
BLINK_MS = 500  # half a second on, half off: visibly "busy" without looking like an alarm

_PATTERNS: dict[str, tuple[Pattern, Pattern]] = {
    "empty": ("off", "off"),
    "identifying": ("blink", "off"),
    "validating": ("blink", "off"),
    "offloading": ("blink", "off"),
    "charging": ("on", "on"),
    "ready": ("on", "off"),
    "fault": ("off", "on"),
}


def lights_for(state: str) -> tuple[Pattern, Pattern]:
    """(green, red) for a bay state; an unknown state shows red, as something is wrong."""
    return _PATTERNS.get(state, ("off", "on"))


class Led:
    """One LED of the Linux LED class: /sys/class/leds/NAME/{brightness,trigger,delay_*}."""

    def __init__(self, leds_dir: Path, name: str) -> None:
        self.name = name
        self.path = leds_dir / name

    def show(self, pattern: Pattern) -> None:
        """Switch the LED off, on or to blinking; OSError when it cannot be written."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"no LED {self.name!r} in {self.path.parent}")
        if pattern == "blink":
            # The timer trigger creates delay_on/delay_off (root's, 500 ms by default), so it
            # is written first and the delays only when they differ.
            self._write("trigger", "timer")
            self._write_unless("delay_on", str(BLINK_MS))
            self._write_unless("delay_off", str(BLINK_MS))
            return
        self._write("trigger", "none")
        self._write("brightness", str(self._max() if pattern == "on" else 0))

    def _max(self) -> int:
        try:
            return int((self.path / "max_brightness").read_text().strip() or 1)
        except (OSError, ValueError):
            return 1

    def _write_unless(self, attribute: str, value: str) -> None:
        try:
            if (self.path / attribute).read_text().strip() == value:
                return
        except OSError:
            pass
        self._write(attribute, value)

    def _write(self, attribute: str, value: str) -> None:
        with open(self.path / attribute, "w", encoding="ascii") as fh:
            fh.write(value + "\n")


Report = Callable[[int, Finding], None]


class BayLights:
    """EventBus listener: each bay's green/red LEDs follow its state; a failed LED is reported once."""

    def __init__(self, leds: dict[int, tuple[Led | None, Led | None]], report: Report) -> None:
        self._leds = leds
        self._report = report
        self._shown: dict[str, Pattern] = {}
        self._failed: set[str] = set()
        self._lock = threading.Lock()

    def show(self, bay: int, state: str) -> None:
        """Show `state` on `bay`'s lights (only LEDs whose pattern changed are written)."""
        pair = self._leds.get(bay)
        if pair is None:
            return
        with self._lock:
            for led, pattern in zip(pair, lights_for(state), strict=True):
                if led is not None and self._shown.get(led.name) != pattern:
                    self._apply(bay, led, pattern)

    def _apply(self, bay: int, led: Led, pattern: Pattern) -> None:
        try:
            led.show(pattern)
        except OSError as exc:
            self._shown.pop(led.name, None)  # try again at the next change
            if led.name not in self._failed:
                self._failed.add(led.name)
                message = f"bay {bay}: LED {led.name!r} cannot be set: {exc}"
                logger.warning("%s", message)
                self._report(bay, warning("led_failed", message, bay=bay, led=led.name))
            return
        self._shown[led.name] = pattern
        self._failed.discard(led.name)

    def __call__(self, item: object) -> None:
        """EventBus listener: a bay view sets its bay's lights."""
        if isinstance(item, BayView):
            self.show(item.number, item.state)

    def start(self) -> None:
        """Daemon plugin: lights of bays not shown yet start as empty (both off)."""
        for bay, pair in self._leds.items():
            if not any(led and led.name in self._shown for led in pair):
                self.show(bay, "empty")

    def stop(self) -> None:
        """Every configured LED off: nobody drives them once the daemon stops."""
        for bay in list(self._leds):
            self.show(bay, "empty")


def bay_lights(cfg: DockConfig, bus: EventBus) -> BayLights | None:
    """The lights of the bays that name LEDs, reporting failures as alerts; None when none do."""
    leds_dir = Path(cfg.recorders.leds_dir)
    leds = {
        b.number: (
            Led(leds_dir, b.led_green) if b.led_green else None,
            Led(leds_dir, b.led_red) if b.led_red else None,
        )
        for b in cfg.bay
        if b.led_green or b.led_red
    }
    if not leds:
        return None

    def report(_bay: int, finding: Finding) -> None:
        bus.alert(finding.code, finding.severity, finding.message, **finding.detail)

    return BayLights(leds, report)
