"""Discovery of real recorders: udev block (and, for zfy bays, usb) devices mapped to bays.

The netlink monitor is started before the present devices are enumerated, so nothing that
appears in between is missed; every event is reconciled against the device's state in sysfs
(its size now), so repeated, coalesced or reordered events are harmless. Works with kernel
uevents alone (no udevd: only DEVNAME, DEVTYPE, ... are set, so bays match by udev_match)
and with udevd (ID_PATH is set, so bays match by usb_path). A loop device "appears" with a
`change` event when a file is attached (size becomes non-zero) and "vanishes" when its size
drops back to 0; a USB stick is `add`/`remove`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from firmware_interface import mount
from firmware_interface.base import Recorder, RecorderError
from firmware_interface.discovery import BayFault, BayWaiting, DiscoveryEvent, Docked, Undocked
from firmware_interface.mass_storage import MassStorageRecorder
from firmware_interface.specs import BaySpec, RecorderAccess
from firmware_interface.zfy import ZfyRecorder, ZfySdk

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceState:
    """What matters of one udev device at one event, free of pyudev."""

    action: str
    key: str  # DEVPATH: stable for the life of the device node
    subsystem: str
    devtype: str
    devnode: str
    size: int  # 512-byte sectors now (0: no medium, or removed); 1 for non-block devices
    props: Mapping[str, str]
    parent_key: str = ""
    parent_props: Mapping[str, str] = field(default_factory=dict)

    @property
    def present(self) -> bool:
        """Whether the device is there with a medium."""
        return self.action != "remove" and self.size > 0


def bay_matches(bay: BaySpec, props: Mapping[str, str]) -> bool:
    """Whether udev properties identify `bay` (ID_PATH of its port, or every udev_match)."""
    if bay.usb_path:
        path = props.get("ID_PATH", "")
        return path == bay.usb_path or path.startswith(bay.usb_path + "-")
    if bay.udev_match:
        return all(props.get(k) == v for k, v in bay.udev_match.items())
    return False


def match_bay(bays: list[BaySpec], dev: DeviceState) -> BaySpec | None:
    """The bay a device belongs to: by its own properties, or for a partition, its disk's."""
    for bay in bays:
        if bay_matches(bay, dev.props):
            return bay
        if dev.devtype == "partition" and bay_matches(bay, dev.parent_props):
            return bay
    return None


def _sectors(props: Mapping[str, str], subsystem: str) -> int:
    if subsystem != "block":
        return 1
    try:
        return int(Path(f"/sys{props.get('DEVPATH', '/-')}/size").read_text().strip())
    except (OSError, ValueError):
        return 0


def device_state(device: Any, action: str) -> DeviceState:
    """A DeviceState from a pyudev Device."""
    props = {str(k): str(v) for k, v in device.properties.items()}
    subsystem = props.get("SUBSYSTEM", "")
    parent = device.parent if props.get("DEVTYPE") == "partition" else None
    parent_props = (
        {str(k): str(v) for k, v in parent.properties.items()} if parent is not None else {}
    )
    return DeviceState(
        action=action,
        key=props.get("DEVPATH", device.sys_path),
        subsystem=subsystem,
        devtype=props.get("DEVTYPE", ""),
        devnode=props.get("DEVNAME", ""),
        size=0 if action == "remove" else _sectors(props, subsystem),
        props=props,
        parent_key=parent_props.get("DEVPATH", ""),
        parent_props=parent_props,
    )


@dataclass
class BaySlot:
    """What one bay holds now."""

    bay: BaySpec
    recorder: Recorder | None = None
    keys: set[str] = field(default_factory=set)  # devices whose loss means the recorder left
    sdk_key: str = ""
    faulted_key: str = ""
    waiting: DeviceState | None = None  # a zfy recorder waiting for the SDK to be free


def _monitor_source() -> str:
    """Listen to udevd's processed events when it runs, else to the kernel's own."""
    return "udev" if os.path.exists("/run/udev/control") else "kernel"


class UdevBayWatcher:
    """Discovery for udev bays: mounts each recorder's volume read-only and emits DockEvents."""

    def __init__(
        self,
        bays: list[BaySpec],
        recorders: RecorderAccess,
        tz: ZoneInfo,
        storage_timeout_s: float = 30.0,
        poll_s: float = 0.5,
    ) -> None:
        self.bays = bays
        self.slots = {bay.number: BaySlot(bay) for bay in bays}
        self.recorders = recorders
        self.tz = tz
        self.storage_timeout_s = storage_timeout_s
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mount_point(self, bay: int) -> Path:
        """Where bay `bay`'s volume is mounted."""
        return Path(self.recorders.mount_dir) / f"bay{bay}"

    def subsystems(self) -> list[str]:
        """Block devices always; usb devices too when a bay speaks to the zfy SDK."""
        zfy = any(bay.kind == "zfy" for bay in self.bays)
        return ["block", "usb"] if zfy else ["block"]

    def start(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        """Start the netlink monitor, then handle present devices and events in a thread."""
        import pyudev

        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context, source=_monitor_source())
        for subsystem in self.subsystems():
            monitor.filter_by(subsystem)
        monitor.start()  # before enumerating: a device appearing in between is not lost
        self._thread = threading.Thread(
            target=self._run, args=(context, monitor, emit), name="udev-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and release (unmount) every recorder still held."""
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for slot in self.slots.values():
            if slot.recorder is not None:
                slot.recorder.close()
                slot.recorder = None

    def _run(self, context: Any, monitor: Any, emit: Callable[[DiscoveryEvent], None]) -> None:
        for subsystem in self.subsystems():
            for device in context.list_devices(subsystem=subsystem):
                self.handle(device_state(device, "add"), emit)
        while not self._stop.is_set():
            device = monitor.poll(timeout=self.poll_s)
            if device is not None:
                self.handle(device_state(device, device.action or "change"), emit)
            self.retry_waiting(emit)

    def retry_waiting(self, emit: Callable[[DiscoveryEvent], None]) -> None:
        """Bring up a zfy recorder that waited, once no other is in SDK mode."""
        for slot in self.slots.values():
            if slot.waiting is not None and self._in_sdk_mode(slot) is None:
                dev, slot.waiting = slot.waiting, None
                self._present(slot, dev, emit)

    def handle(self, dev: DeviceState, emit: Callable[[DiscoveryEvent], None]) -> None:
        """Reconcile the bays with one device's current state."""
        try:
            if not dev.present:
                self._absent(dev, emit)
                return
            bay = match_bay(self.bays, dev)
            if bay is not None:
                self._present(self.slots[bay.number], dev, emit)
        except Exception:  # one bad device must not end discovery for every bay
            logger.exception("udev: unexpected error handling %s", dev.key)

    def _absent(self, dev: DeviceState, emit: Callable[[DiscoveryEvent], None]) -> None:
        for slot in self.slots.values():
            if slot.waiting is not None and dev.key == slot.waiting.key:
                slot.waiting = None  # taken out before its turn
                emit(Undocked(slot.bay.number))
            if dev.key == slot.faulted_key:
                slot.faulted_key = ""
                emit(Undocked(slot.bay.number))
            elif dev.key in slot.keys:
                recorder = slot.recorder
                if isinstance(recorder, ZfyRecorder) and recorder.awaiting_storage:
                    slot.keys.discard(dev.key)  # re-enumerating as mass storage after SetMSDC
                else:
                    self._undock(slot, emit)

    def _present(
        self, slot: BaySlot, dev: DeviceState, emit: Callable[[DiscoveryEvent], None]
    ) -> None:
        if slot.faulted_key:
            return  # until the faulty device leaves the bay
        try:
            if slot.bay.kind == "zfy":
                self._zfy_present(slot, dev, emit)
            elif slot.recorder is None and dev.subsystem == "block":
                self._storage_present(slot, dev, emit)
        except RecorderError as exc:
            slot.faulted_key = dev.key
            logger.error(
                "bay %s: %s: %s",
                slot.bay.number,
                dev.devnode or dev.key,
                exc,
                extra={"BAY": slot.bay.number, "DEVICE": dev.devnode},
            )
            emit(BayFault(slot.bay.number, exc.code, str(exc)))

    def _storage_present(
        self, slot: BaySlot, dev: DeviceState, emit: Callable[[DiscoveryEvent], None]
    ) -> None:
        storage = self._mount(slot, dev)
        if storage is not None:
            slot.recorder = storage
            slot.keys = {k for k in (dev.key, dev.parent_key) if k}
            emit(Docked(slot.bay.number, storage, "mass_storage"))

    def _mount(self, slot: BaySlot, dev: DeviceState) -> MassStorageRecorder | None:
        """Mount the device's filesystem read-only; None when it carries none (yet)."""
        fstype = mount.probe_fs_type(dev.devnode)
        if fstype is None:
            return None  # blank medium, or a partition table whose partitions follow
        if fstype and fstype not in mount.ALLOWED_FS:
            raise RecorderError(
                "unsupported_filesystem",
                f"{dev.devnode} holds {fstype}; expected one of {', '.join(mount.ALLOWED_FS)}",
            )
        number = slot.bay.number
        return MassStorageRecorder.mount(
            dev.devnode, self.mount_point(number), number, fstype, self.tz
        )

    def _zfy_present(
        self, slot: BaySlot, dev: DeviceState, emit: Callable[[DiscoveryEvent], None]
    ) -> None:
        recorder = slot.recorder
        if recorder is None:
            busy = self._in_sdk_mode(slot)
            if busy is not None:
                if slot.waiting is None:
                    message = (
                        f"waiting: the recorder in bay {busy} is still in SDK mode, and the SDK "
                        "cannot tell two recorders apart"
                    )
                    logger.info(
                        "bay %s: %s", slot.bay.number, message, extra={"BAY": slot.bay.number}
                    )
                    emit(BayWaiting(slot.bay.number, "zfy_waiting_for_sdk", message))
                slot.waiting = dev
                return
            recorder = self._bring_up(slot)
            slot.recorder = recorder
            slot.keys = {dev.key}
            emit(Docked(slot.bay.number, recorder, "zfy"))
        if isinstance(recorder, ZfyRecorder) and not recorder.has_storage:
            if dev.subsystem == "block" and (storage := self._mount(slot, dev)) is not None:
                slot.keys |= {k for k in (dev.key, dev.parent_key) if k}
                recorder.attach_storage(storage)

    def _in_sdk_mode(self, slot: BaySlot) -> int | None:
        """Another bay whose zfy recorder is still in SDK mode, if any."""
        for other in self.slots.values():
            recorder = other.recorder
            if other is not slot and isinstance(recorder, ZfyRecorder) and recorder.in_sdk_mode:
                return other.bay.number
        return None

    def _bring_up(self, slot: BaySlot) -> ZfyRecorder:
        """Identify through the SDK; refuse an identity another bay already holds."""
        recorder = ZfyRecorder.bring_up(
            self._sdk(), slot.bay.number, self.tz, self.storage_timeout_s
        )
        device_id = recorder.sdk_device_id
        for other in self.slots.values():
            held = other.recorder
            if isinstance(held, ZfyRecorder) and held.sdk_device_id == device_id:
                recorder.close()
                raise RecorderError(
                    "zfy_ambiguous",
                    f"the SDK answered with {device_id}, the recorder in bay "
                    f"{other.bay.number}: it cannot tell the recorders apart; re-dock this one "
                    f"once bay {other.bay.number} is offloading",
                )
        return recorder

    def _sdk(self) -> ZfySdk:
        try:
            password = self.recorders.zfy_password()
        except OSError as exc:
            raise RecorderError(
                "zfy_password_unreadable",
                f"{self.recorders.zfy_password_source}: {exc.strerror}",
            ) from exc
        return ZfySdk(self.recorders.zfy_library, password, self.recorders.zfy_id_code)

    def _undock(self, slot: BaySlot, emit: Callable[[DiscoveryEvent], None]) -> None:
        recorder, slot.recorder = slot.recorder, None
        slot.keys = set()
        if recorder is not None:
            recorder.close()
        logger.info("bay %s: recorder left", slot.bay.number, extra={"BAY": slot.bay.number})
        emit(Undocked(slot.bay.number))
