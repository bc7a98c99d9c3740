"""The dock's configuration told to the hardware layer in its own terms (bay specs, access)."""

from __future__ import annotations

from functools import partial
from zoneinfo import ZoneInfo

from agent.config import BaySection, DockConfig, RecordersSection, read_secret
from firmware_interface.discovery import BayWatcher
from firmware_interface.specs import BaySpec, RecorderAccess


def bay_spec(bay: BaySection) -> BaySpec:
    """A configured bay as the hardware layer sees it."""
    return BaySpec(bay.number, bay.kind, bay.usb_path, dict(bay.udev_match), bay.sim_dir)


def recorder_access(recorders: RecordersSection) -> RecorderAccess:
    """Mount directory and SDK access from `[recorders]`; the password is read when needed."""
    path = recorders.zfy_password_file
    return RecorderAccess(
        recorders.mount_dir,
        recorders.zfy_library,
        recorders.zfy_id_code,
        partial(read_secret, path),
        f"recorders.zfy_password_file = {path!r}",
    )


def build_watchers(cfg: DockConfig, tz: ZoneInfo) -> list[BayWatcher]:
    """The discovery watchers for the configured bays."""
    from firmware_interface.watchers import build_watchers as build

    return build([bay_spec(b) for b in cfg.bay], recorder_access(cfg.recorders), tz)
