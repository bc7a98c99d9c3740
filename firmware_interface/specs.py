"""What the hardware layer is told about the dock: its bays and how recorders are reached.

Plain values defined here, so the drivers never depend on the daemon's configuration schema.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def _no_password() -> str:
    return ""


@dataclass(frozen=True)
class BaySpec:
    """One bay: its number, how its device is recognised, and which driver reads it."""

    number: int
    kind: str = "mass_storage"  # simulated, mass_storage or zfy
    usb_path: str = ""  # udev ID_PATH of the bay's USB port
    udev_match: Mapping[str, str] = field(default_factory=dict)  # or any udev properties
    sim_dir: str = ""  # a simulated bay's directory


@dataclass(frozen=True)
class RecorderAccess:
    """How recorder volumes are mounted and the vendor SDK is reached."""

    mount_dir: str
    zfy_library: str = ""
    zfy_id_code: str = ""  # the device type's identification code (Init_Device)
    zfy_password: Callable[[], str] = _no_password  # read when first needed; may raise OSError
    zfy_password_source: str = ""  # names where the password comes from, for error messages
