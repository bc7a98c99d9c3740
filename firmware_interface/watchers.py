"""The discovery watchers a dock needs: simulated bays and udev bays."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from firmware_interface.discovery import BayWatcher
from firmware_interface.simulated import SimBayWatcher
from firmware_interface.specs import BaySpec, RecorderAccess


def build_watchers(bays: list[BaySpec], access: RecorderAccess, tz: ZoneInfo) -> list[BayWatcher]:
    """A SimBayWatcher for the simulated bays and a UdevBayWatcher for the others, as needed."""
    watchers: list[BayWatcher] = []
    sim = {bay.number: Path(bay.sim_dir) for bay in bays if bay.sim_dir}
    if sim:
        watchers.append(SimBayWatcher(sim, tz))
    real = [bay for bay in bays if not bay.sim_dir]
    if real:
        from firmware_interface.udev import UdevBayWatcher

        watchers.append(UdevBayWatcher(real, access, tz))
    return watchers
