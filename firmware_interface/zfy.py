"""The zfy driver: a GA/T 947 recorder, through its vendor SDK, then as mass storage.

The SDK (firmware_interface.zfy_sdk) addresses "the" connected recorder, so only one recorder
is in SDK mode at a time (the bay watcher makes a second wait until the first has switched to
mass storage), and a switched recorder is not asked through the SDK again, except to write its
officer (write_officer), which first proves by serial that the SDK reaches this recorder.

The standard set can set the clock but not read it: Capabilities(read_clock=False,
set_clock=True), status().clock is None. The recorder is presented as docked as soon as the
SDK has identified it, so the agent can set the clock while the SDK session is open; the
first request for files switches it to mass storage (SetMSDC) and waits for the bay's
watcher to attach the volume that then appears. Identity from the SDK wins over
recorder.json, which only fills the model and firmware. The recording resolution is read
once, in SDK mode, where the SDK has ReadDeviceResolution.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from firmware_interface.base import (
    Capabilities,
    ClipEntry,
    EventLog,
    Identity,
    Listing,
    RecorderError,
    RecorderGone,
    Status,
)
from firmware_interface.findings import Finding, info, warning
from firmware_interface.mass_storage import MassStorageRecorder
from firmware_interface.volume import identity_from, read_recorder_json
from firmware_interface.zfy_officer import officer_info
from firmware_interface.zfy_sdk import SDK_LOCK, ZfyError, ZfyInfo, ZfySdk, decode_gbk

__all__ = ["SDK_LOCK", "ZfyError", "ZfyInfo", "ZfyRecorder", "ZfySdk", "identity_of"]

logger = logging.getLogger(__name__)

CLOCK_AGREEMENT_S = 2.0
# Held across a sequence of SDK calls that must reach one recorder (bring-up, an officer
# write): no other sequence may re-target the SDK in between.
SDK_SESSION = threading.Lock()


def identity_of(info: ZfyInfo) -> tuple[Identity, list[Finding]]:
    """Identity from ZFY_INFO, with findings for text that is not valid GBK."""
    fields: dict[str, str] = {}
    findings: list[Finding] = []
    names = (
        ("cSerial", "device_id"),
        ("userNo", "officer_id"),
        ("userName", "officer_name"),
        ("unitNo", "unit_no"),
        ("unitName", "unit_name"),
    )
    for c_name, key in names:
        text, clean = decode_gbk(getattr(info, c_name))
        fields[key] = text
        if not clean:
            findings.append(warning("zfy_bad_text", f"SDK {c_name} is not valid GBK: {text!r}"))
    return identity_from(fields), findings


class ZfyRecorder:
    """A GA/T 947 recorder: identity, battery and clock through the SDK, clips as mass storage."""

    capabilities = Capabilities(read_clock=False, set_clock=True, delete=True, event_log=True)

    def __init__(self, sdk: ZfySdk, bay: int, tz: ZoneInfo, storage_timeout_s: float) -> None:
        self.sdk = sdk
        self.bay = bay
        self.tz = tz
        self.storage_timeout_s = storage_timeout_s
        self._identity, self._findings = identity_of(sdk.info())
        self._battery = sdk.battery()
        self._resolution = self._read_resolution()
        self._storage: MassStorageRecorder | None = None
        self._ready = threading.Event()
        self._switching = False
        self._closed = False
        self._lock = threading.Lock()

    def _read_resolution(self) -> tuple[int, int] | None:
        """The recording resolution where the SDK has it; a failed read is a finding, no more."""
        try:
            return self.sdk.resolution()
        except ZfyError as exc:
            self._findings.append(info("zfy_resolution_unread", str(exc)))
            return None

    @classmethod
    def bring_up(cls, sdk: ZfySdk, bay: int, tz: ZoneInfo, storage_timeout_s: float) -> ZfyRecorder:
        """Connect, log in, read identity and battery; ZfyError when the SDK refuses."""
        with SDK_SESSION:
            sdk.connect()
            recorder = cls(sdk, bay, tz, storage_timeout_s)
        RECORDERS.add(recorder)
        logger.info(
            "bay %s: zfy recorder %s identified through the SDK",
            bay,
            recorder._identity.device_id,
            extra={"BAY": bay, "DEVICE_ID": recorder._identity.device_id},
        )
        return recorder

    @property
    def sdk_device_id(self) -> str:
        """The serial the SDK gave when this recorder was brought up."""
        return self._identity.device_id

    @property
    def in_sdk_mode(self) -> bool:
        """Brought up through the SDK and not yet switched to mass storage (nor released).

        The SDK addresses "the" connected recorder, so only one may be in this mode at a time;
        once switched, this recorder is never asked through the SDK again.
        """
        return not self._closed and self._storage is None and not self._switching

    @property
    def awaiting_storage(self) -> bool:
        """Switched to mass storage, and its volume has not been attached yet."""
        return self._switching and self._storage is None

    @property
    def has_storage(self) -> bool:
        """Whether the mass-storage volume is attached."""
        return self._storage is not None

    def attach_storage(self, storage: MassStorageRecorder) -> None:
        """The bay's watcher found and mounted the recorder's volume."""
        with self._lock:
            if self._closed:
                storage.close()
                return
            self._storage = storage
            self._switching = False
        self._ready.set()

    def identity(self) -> Identity:
        """The SDK's identity; model and firmware from recorder.json once the volume is here."""
        if self._storage is None:
            return self._identity
        data = self._storage_json()
        extra = {
            k: str(data[k])[:128] for k in ("model", "firmware") if isinstance(data.get(k), str)
        }
        return Identity(**{**extra, **{k: v for k, v in vars(self._identity).items() if v}})

    def _storage_json(self) -> dict[str, Any]:
        assert self._storage is not None
        data, _ = read_recorder_json(self._storage.volume)
        return data

    def identity_findings(self) -> list[Finding]:
        """GBK problems from the SDK, and a disagreement with recorder.json when there is one."""
        findings = list(self._findings)
        if self._storage is not None:
            json_id = self._storage_json().get("device_id")
            if json_id is not None and json_id != self._identity.device_id:
                findings.append(
                    warning(
                        "identity_mismatch",
                        f"SDK serial {self._identity.device_id!r} but recorder.json says "
                        f"{json_id!r}; the SDK's is used",
                    )
                )
        return findings

    def status(self) -> Status:
        """Battery through the SDK while in SDK mode (else the last reading), storage, no clock.

        After the switch the SDK may be talking to another bay's recorder.
        """
        if self.in_sdk_mode:
            try:
                self._battery = self.sdk.battery()
            except ZfyError as exc:
                logger.info("bay %s: battery from the last reading: %s", self.bay, exc)
        total, free = self._storage.storage() if self._storage else (None, None)
        battery = float(self._battery)
        return Status(battery, battery < 100, total, free, None, (), self._resolution)

    def write_officer(self, officer_id: str, name: str, unit_no: str | None) -> Identity:
        """WriteZFYInfo: bind the recorder to an officer; the identity read back after writing.

        The text is checked before the SDK is touched (officer_info). After the switch to
        mass storage the SDK may reach another bay's recorder, so the SDK is connected again
        and must answer with this recorder's serial before anything is written; the write is
        then read back through GetZFYInfo and must hold what was written.
        """
        with SDK_SESSION:
            return self._write_officer(officer_id, name, unit_no)

    def _write_officer(self, officer_id: str, name: str, unit_no: str | None) -> Identity:
        with self._lock:
            if self._closed:
                raise RecorderGone("the zfy recorder was released")
            switched = not self.in_sdk_mode
        if switched:
            busy = [r.bay for r in list(RECORDERS) if r is not self and r.in_sdk_mode]
            if busy:
                raise RecorderError(
                    "zfy_sdk_busy",
                    f"the recorder in bay {busy[0]} is in SDK mode: the SDK cannot tell the "
                    "two apart; assign again once it is offloading",
                )
            try:
                self.sdk.connect()
            except ZfyError as exc:
                raise RecorderError(
                    "zfy_not_reachable",
                    f"nothing written: the recorder does not answer the SDK since it switched to "
                    f"mass storage ({exc.code}: {exc})",
                ) from exc
        current = self.sdk.info()
        serial, _ = decode_gbk(current.cSerial)
        if serial != self._identity.device_id:
            raise RecorderError(
                "zfy_other_recorder",
                f"the SDK reaches recorder {serial!r}, not {self._identity.device_id!r}: "
                "nothing written; re-dock this recorder alone and assign it again",
            )
        wanted = officer_info(current, officer_id, name, unit_no)
        self.sdk.write_info(wanted)
        back = self.sdk.info()
        if identity_of(back)[0] != identity_of(wanted)[0]:
            raise RecorderError(
                "zfy_write_not_kept",
                "WriteZFYInfo reported success but GetZFYInfo reads back other values",
            )
        identity, findings = identity_of(back)
        self._identity, self._findings = identity, findings
        logger.info(
            "bay %s: recorder %s assigned to officer %s through the SDK",
            self.bay,
            identity.device_id,
            identity.officer_id,
            extra={"BAY": self.bay, "DEVICE_ID": identity.device_id},
        )
        return identity

    def set_clock(self, now: datetime) -> None:
        """SyncDevTime: the SDK sets the recorder to the dock's local time, which must be `now`.

        The SDK takes the time from the C library's local time of this process, so the dock's
        time zone must be the recorders' (`now` is in their zone); otherwise the clock is left
        alone and the error says which zones differ.
        """
        if not self.in_sdk_mode:
            raise RecorderError(
                "zfy_clock_after_switch",
                "the recorder has left SDK mode; the SDK may now address another recorder",
            )
        host_now = datetime.now()  # naive local time: what the SDK will write
        if abs((host_now - now).total_seconds()) > CLOCK_AGREEMENT_S:
            raise RecorderError(
                "clock_source_mismatch",
                f"the SDK sets the recorder to the dock's local time "
                f"({host_now:%Y-%m-%d %H:%M:%S} {time.strftime('%Z')}), not to the recorders' "
                f"{now:%Y-%m-%d %H:%M:%S} ({self.tz.key}); set the dock's time zone to "
                f"{self.tz.key} (timedatectl set-timezone)",
            )
        self.sdk.sync_time()
        logger.info(
            "bay %s: recorder clock set through the SDK",
            self.bay,
            extra={"BAY": self.bay, "DEVICE_ID": self._identity.device_id},
        )

    def mass_storage(self) -> MassStorageRecorder:
        """The recorder's volume: switch with SetMSDC on first use and wait for it to appear."""
        with self._lock:
            if self._closed:
                raise RecorderGone("the zfy recorder was released")
            if self._storage is None and not self._switching:
                # Set first: the device may vanish (re-enumerate) before SetMSDC returns.
                self._switching = True
                try:
                    self.sdk.set_msdc()
                except BaseException:
                    self._switching = False
                    raise
                logger.info("bay %s: switched to mass storage", self.bay, extra={"BAY": self.bay})
        if not self._ready.wait(self.storage_timeout_s):
            raise RecorderError(
                "zfy_storage_timeout",
                f"no mass-storage volume appeared within {self.storage_timeout_s:.0f} s of SetMSDC",
            )
        if self._storage is None:
            raise RecorderGone("the zfy recorder was released")
        return self._storage

    def list_clips(self) -> Listing:
        """Every media file on the recorder's volume."""
        return self.mass_storage().list_clips()

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        """Open a clip on the recorder's volume."""
        return self.mass_storage().open_clip(clip)

    def delete_clip(self, clip: ClipEntry) -> None:
        """Delete a clip from the recorder's volume."""
        self.mass_storage().delete_clip(clip)

    def read_events(self) -> EventLog:
        """The event log on the recorder's volume."""
        return self.mass_storage().read_events()

    def close(self) -> None:
        """Unmount the volume (if any) and wake anyone waiting for it."""
        with self._lock:
            self._closed = True
            storage, self._storage = self._storage, None
        if storage is not None:
            storage.close()
        self._ready.set()


# Every recorder brought up and not yet collected: write_officer asks which are in SDK mode.
RECORDERS: weakref.WeakSet[ZfyRecorder] = weakref.WeakSet()
