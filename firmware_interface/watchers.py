"""The discovery watchers a dock configuration needs: simulated bays and udev bays."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from agent.config import DockConfig
from firmware_interface.discovery import BayWatcher
from firmware_interface.simulated import SimBayWatcher


def build_watchers(cfg: DockConfig, tz: ZoneInfo) -> list[BayWatcher]:
    """A SimBayWatcher for the sim_dir bays and a UdevBayWatcher for the others, as needed."""
    watchers: list[BayWatcher] = []
    sim = {bay.number: Path(bay.sim_dir) for bay in cfg.bay if bay.sim_dir}
    if sim:
        watchers.append(SimBayWatcher(sim, tz))
    real = [bay for bay in cfg.bay if not bay.sim_dir]
    if real:
        from firmware_interface.udev import UdevBayWatcher

        watchers.append(UdevBayWatcher(real, cfg.recorders, tz))
    return watchers
