"""The GA/T 947 recorder SDK (vendor shared library) through ctypes, and the zfy driver.

C prototypes assumed (cdecl; every call returns 1 on success, 0 on failure, and writes a
status code to *iRet):

    typedef struct { char cSerial[8]; char userNo[7]; char userName[33];
                     char unitNo[13]; char unitName[33]; } ZFY_INFO;   /* strings GBK */
    int Init_Device(char *password, int *iRet);                    /* connect + log in */
    int GetZFYInfo(ZFY_INFO *info, char *password, int *iRet);
    int SyncDevTime(char *password, int *iRet);          /* sets the HOST's local time */
    int ReadDeviceBatteryDumpEnergy(int *battery, char *password, int *iRet);  /* 0..100 */
    int SetMSDC(char *password, int *iRet);             /* re-enumerate as mass storage */

iRet: 1/2 connect ok/failed, 3/4 password ok/failed, 5/6 time set ok/failed, 7/8 mass
storage ok/failed. The SDK takes no device address: it talks to "the" connected recorder,
so every call goes through one process-wide lock, only one recorder is in SDK mode at a time
(the bay watcher makes a second wait until the first has switched to mass storage), and a
switched recorder is never asked through the SDK again.

The standard set can set the clock but not read it: Capabilities(read_clock=False,
set_clock=True), status().clock is None. The recorder is presented as docked as soon as the
SDK has identified it, so the agent can set the clock while the SDK session is open; the
first request for files switches it to mass storage (SetMSDC) and waits for the bay's
watcher to attach the volume that then appears. Identity from the SDK wins over
recorder.json, which only fills the model and firmware.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from datetime import datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from agent.findings import Finding, warning
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
from firmware_interface.mass_storage import MassStorageRecorder
from firmware_interface.volume import identity_from, read_recorder_json

logger = logging.getLogger(__name__)

SDK_LOCK = threading.Lock()  # the SDK addresses one device and is not known to be reentrant
CLOCK_AGREEMENT_S = 2.0
FAILURES = {
    2: ("zfy_connect_failed", "cannot connect to the recorder through the SDK"),
    4: ("zfy_wrong_password", "the recorder refused the SDK password"),
    6: ("zfy_clock_set_failed", "the recorder refused to set its clock"),
    8: ("zfy_mass_storage_failed", "the recorder could not switch to mass storage"),
}


class ZfyInfo(ctypes.Structure):
    """ZFY_INFO as the SDK fills it."""

    _fields_ = [
        ("cSerial", ctypes.c_char * 8),
        ("userNo", ctypes.c_char * 7),
        ("userName", ctypes.c_char * 33),
        ("unitNo", ctypes.c_char * 13),
        ("unitName", ctypes.c_char * 33),
    ]


class ZfyError(RecorderError):
    """The SDK failed a call; `code` names the failure (e.g. zfy_wrong_password)."""


def decode_gbk(raw: bytes) -> tuple[str, bool]:
    """Text of a GBK C string (to its first NUL) and whether it decoded cleanly."""
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("gbk"), True
    except UnicodeDecodeError:
        return text.decode("gbk", "replace"), False


def _prototype(lib: Any) -> None:
    """Declare the SDK's C prototypes so ctypes checks the arguments."""
    c_int_p, c_char_p = ctypes.POINTER(ctypes.c_int), ctypes.c_char_p
    protos: dict[str, list[Any]] = {
        "Init_Device": [c_char_p, c_int_p],
        "GetZFYInfo": [ctypes.POINTER(ZfyInfo), c_char_p, c_int_p],
        "SyncDevTime": [c_char_p, c_int_p],
        "ReadDeviceBatteryDumpEnergy": [c_int_p, c_char_p, c_int_p],
        "SetMSDC": [c_char_p, c_int_p],
    }
    for name, argtypes in protos.items():
        func = getattr(lib, name)
        func.argtypes = argtypes
        func.restype = ctypes.c_int


class ZfySdk:
    """One session with the vendor SDK: the library and the recorders' password."""

    def __init__(self, library: str, password: str) -> None:
        try:
            self._lib = ctypes.CDLL(library)
            _prototype(self._lib)
        except (OSError, AttributeError) as exc:
            raise ZfyError("zfy_library_unusable", f"SDK library {library!r}: {exc}") from exc
        try:
            self._password = password.encode("gbk")
        except UnicodeEncodeError as exc:
            raise ZfyError("zfy_bad_password", "the SDK password is not GBK text") from exc

    def _call(self, name: str, *args: Any) -> int:
        """Call an SDK function; ZfyError names the failure from its iRet code."""
        iret = ctypes.c_int(0)
        with SDK_LOCK:
            ret = getattr(self._lib, name)(*args, self._password, ctypes.byref(iret))
        if iret.value in FAILURES:
            code, message = FAILURES[iret.value]
            raise ZfyError(code, f"{name}: {message} (iRet {iret.value})")
        if ret != 1:
            raise ZfyError("zfy_sdk_error", f"{name} failed: returned {ret}, iRet {iret.value}")
        return iret.value

    def connect(self) -> None:
        """Init_Device: connect to the recorder and log in."""
        self._call("Init_Device")

    def info(self) -> ZfyInfo:
        """GetZFYInfo: serial, officer and unit (raw GBK)."""
        info = ZfyInfo()
        self._call("GetZFYInfo", ctypes.byref(info))
        return info

    def battery(self) -> int:
        """ReadDeviceBatteryDumpEnergy: remaining battery, percent as reported."""
        value = ctypes.c_int(-1)
        self._call("ReadDeviceBatteryDumpEnergy", ctypes.byref(value))
        return value.value

    def sync_time(self) -> None:
        """SyncDevTime: set the recorder's clock to the host's local time."""
        self._call("SyncDevTime")

    def set_msdc(self) -> None:
        """SetMSDC: switch the recorder to USB mass storage (it re-enumerates)."""
        self._call("SetMSDC")


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
        self._storage: MassStorageRecorder | None = None
        self._ready = threading.Event()
        self._switching = False
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def bring_up(cls, sdk: ZfySdk, bay: int, tz: ZoneInfo, storage_timeout_s: float) -> ZfyRecorder:
        """Connect, log in, read identity and battery; ZfyError when the SDK refuses."""
        sdk.connect()
        recorder = cls(sdk, bay, tz, storage_timeout_s)
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
        return Status(battery, battery < 100, total, free, None, ())

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
