"""The GA/T 947 recorder SDK (the vendor's shared library) through ctypes.

C prototypes as vendors ship them (cdecl; the Ministry's function set as the 恒安 H8
LibBodycam.dll binding declares it, Edward125/H6 `H6上位机软件/subfun.cs`):

    typedef struct { char cSerial[8]; char userNo[7]; char userName[33];
                     char unitNo[13]; char unitName[33]; } ZFY_INFO;   /* strings GBK */
    void *Init_Device(char *IDCode, int *iRet);  /* a handle or 1; NULL/0 = failed */
    void *GetIDCode(char **IDCode, int *iRet);   /* optional: the IDCode the SDK expects */
    int GetZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet);
    int WriteZFYInfo(ZFY_INFO *info, char *sPwd, int *iRet);         /* optional here */
    int SyncDevTime(char *sPwd, int *iRet);          /* sets the HOST's local time */
    int ReadDeviceBatteryDumpEnergy(int *battery, char *sPwd, int *iRet);   /* 0..100 */
    int ReadDeviceResolution(int *w, int *h, char *sPwd, int *iRet);        /* optional */
    int SetMSDC(char *sPwd, int *iRet);             /* re-enumerate as mass storage */

IDCode is the device type's identification code (设备识别码, a short vendor string, from
`[recorders] zfy_id_code`), not the password; the password (sPwd, 6 bytes) goes to the other
calls. iRet: 1/2 connect ok/failed, 3/4 password ok/failed, 5/6 time set ok/failed, 7/8 mass
storage ok/failed. Init_Device's result is read pointer-sized: some SDKs return a handle, whose
low 32 bits may all be zero. The prototypes are not const and vendor code writes into the
strings it is given, so every `char *` is a fresh writable buffer for that one call (a Python
bytes object would be corrupted in place, and with it the interpreter). The SDK takes no device
address: it talks to "the" connected recorder, so every call goes through one process-wide lock.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from firmware_interface.base import RecorderError

SDK_LOCK = threading.Lock()  # the SDK addresses one device and is not known to be reentrant
SPARE = 64  # room past the string in each buffer, for vendor code that writes beyond it
MAX_SIDE = 16384  # a recorder reporting a larger frame side is not believed
FAILURES = {
    2: ("zfy_connect_failed", "cannot connect to the recorder through the SDK"),
    4: ("zfy_wrong_password", "the recorder refused the SDK password"),
    6: ("zfy_clock_set_failed", "the recorder refused to set its clock"),
    8: ("zfy_mass_storage_failed", "the recorder could not switch to mass storage"),
}
REQUIRED = ("Init_Device", "GetZFYInfo", "SyncDevTime", "ReadDeviceBatteryDumpEnergy", "SetMSDC")
OPTIONAL = ("GetIDCode", "WriteZFYInfo", "ReadDeviceResolution")


class ZfyInfo(ctypes.Structure):
    """ZFY_INFO as the SDK fills it (byte-aligned: every field is char)."""

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


def buffer(value: bytes) -> ctypes.Array[ctypes.c_char]:
    """A private, writable, NUL-terminated copy of `value` with room to spare."""
    return ctypes.create_string_buffer(value, len(value) + SPARE)


class StringArg:
    """The ctypes argument type of every `char *`: a private buffer, never a Python bytes."""

    @classmethod
    def from_param(cls, obj: Any) -> Any:
        """Accept only a ctypes char array (bytes would be written into, in place)."""
        if not (isinstance(obj, ctypes.Array) and obj._type_ is ctypes.c_char):
            raise TypeError(f"expected a private string buffer, not {type(obj).__name__}")
        return obj


def _gbk(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("gbk")
    except UnicodeEncodeError as exc:
        raise ZfyError(f"zfy_bad_{what}", f"the SDK {what} is not GBK text") from exc


def _prototype(lib: Any) -> set[str]:
    """Declare the C prototypes the library has; the optional functions it has."""
    c_int_p, c_str = ctypes.POINTER(ctypes.c_int), StringArg
    info_p = ctypes.POINTER(ZfyInfo)
    protos: dict[str, tuple[list[Any], Any]] = {
        "Init_Device": ([c_str, c_int_p], ctypes.c_void_p),
        "GetIDCode": ([ctypes.POINTER(ctypes.c_void_p), c_int_p], ctypes.c_void_p),
        "GetZFYInfo": ([info_p, c_str, c_int_p], ctypes.c_int),
        "WriteZFYInfo": ([info_p, c_str, c_int_p], ctypes.c_int),
        "SyncDevTime": ([c_str, c_int_p], ctypes.c_int),
        "ReadDeviceBatteryDumpEnergy": ([c_int_p, c_str, c_int_p], ctypes.c_int),
        "ReadDeviceResolution": ([c_int_p, c_int_p, c_str, c_int_p], ctypes.c_int),
        "SetMSDC": ([c_str, c_int_p], ctypes.c_int),
    }
    present = set()
    for name, (argtypes, restype) in protos.items():
        try:
            func = getattr(lib, name)
        except AttributeError:
            if name in REQUIRED:
                raise
            continue
        func.argtypes, func.restype = argtypes, restype
        present.add(name)
    return present


class ZfySdk:
    """One session with the vendor SDK: the library, the IDCode and the recorders' password."""

    def __init__(self, library: str, password: str | bytes, id_code: str | bytes) -> None:
        try:
            self._lib = ctypes.CDLL(library)
            self._has = _prototype(self._lib)
        except (OSError, AttributeError) as exc:
            raise ZfyError("zfy_library_unusable", f"SDK library {library!r}: {exc}") from exc
        self._password = _gbk(password, "password")
        self._id_code = _gbk(id_code, "id_code")
        self.handle: int | None = None

    def has(self, name: str) -> bool:
        """Whether the library exports the optional function `name`."""
        return name in self._has

    def _call(self, name: str, *args: Any) -> int:
        """Call a password-taking function; ZfyError names the failure from its iRet code."""
        iret = ctypes.c_int(0)
        with SDK_LOCK:
            ret = getattr(self._lib, name)(*args, buffer(self._password), ctypes.byref(iret))
        self._check(name, iret.value)
        if not ret:
            raise ZfyError("zfy_sdk_error", f"{name} failed: returned {ret}, iRet {iret.value}")
        return iret.value

    @staticmethod
    def _check(name: str, iret: int, hint: str = "") -> None:
        if iret in FAILURES:
            code, message = FAILURES[iret]
            raise ZfyError(code, f"{name}: {message} (iRet {iret}){hint}")

    def connect(self) -> None:
        """Init_Device(IDCode): connect to the recorder; NULL/0 or a failure iRet is an error."""
        iret = ctypes.c_int(0)
        with SDK_LOCK:
            handle = self._lib.Init_Device(buffer(self._id_code), ctypes.byref(iret))
        if iret.value in FAILURES or not handle:
            hint = (
                f" with recorders.zfy_id_code = {self._id_code.decode('gbk', 'replace')!r}"
                f"{self._id_code_hint()}"
            )
            self._check("Init_Device", iret.value, hint)
            raise ZfyError(
                "zfy_connect_failed",
                f"Init_Device: cannot connect to the recorder through the SDK "
                f"(returned NULL, iRet {iret.value}){hint}",
            )
        self.handle = handle

    def _id_code_hint(self) -> str:
        """What GetIDCode says the SDK expects, for the connect error; "" when it cannot say."""
        expected = self.sdk_id_code()
        if expected is None or expected.encode("gbk", "replace") == self._id_code:
            return ""
        return f"; the SDK's GetIDCode gives {expected!r}"

    def sdk_id_code(self) -> str | None:
        """GetIDCode: the IDCode the library expects, when it has the function and answers."""
        if not self.has("GetIDCode"):
            return None
        # GetIDCode(char **IDCode): the SDK points IDCode at its own string, or fills the
        # buffer IDCode already points at; give it a private one of each.
        scratch = buffer(b"")
        pointer = ctypes.c_void_p(ctypes.addressof(scratch))
        iret = ctypes.c_int(0)
        with SDK_LOCK:
            ret = self._lib.GetIDCode(ctypes.byref(pointer), ctypes.byref(iret))
            text = ctypes.string_at(pointer.value)[:32] if ret and pointer.value else None
        return decode_gbk(text)[0] if text else None

    def info(self) -> ZfyInfo:
        """GetZFYInfo: serial, officer and unit (raw GBK)."""
        info = ZfyInfo()
        self._call("GetZFYInfo", ctypes.byref(info))
        return info

    def write_info(self, info: ZfyInfo) -> None:
        """WriteZFYInfo: store serial, officer and unit in the recorder."""
        if not self.has("WriteZFYInfo"):
            raise ZfyError("zfy_write_unsupported", "this SDK has no WriteZFYInfo")
        copy = ZfyInfo.from_buffer_copy(info)  # the vendor may write into it too
        self._call("WriteZFYInfo", ctypes.byref(copy))

    def battery(self) -> int:
        """ReadDeviceBatteryDumpEnergy: remaining battery, percent as reported."""
        value = ctypes.c_int(-1)
        self._call("ReadDeviceBatteryDumpEnergy", ctypes.byref(value))
        return value.value

    def resolution(self) -> tuple[int, int] | None:
        """ReadDeviceResolution: the recording frame size; None when the SDK lacks the function."""
        if not self.has("ReadDeviceResolution"):
            return None
        width, height = ctypes.c_int(0), ctypes.c_int(0)
        self._call("ReadDeviceResolution", ctypes.byref(width), ctypes.byref(height))
        if not (0 < width.value <= MAX_SIDE and 0 < height.value <= MAX_SIDE):
            raise ZfyError(
                "zfy_bad_resolution",
                f"ReadDeviceResolution reported {width.value}x{height.value}",
            )
        return width.value, height.value

    def sync_time(self) -> None:
        """SyncDevTime: set the recorder's clock to the host's local time."""
        self._call("SyncDevTime")

    def set_msdc(self) -> None:
        """SetMSDC: switch the recorder to USB mass storage (it re-enumerates)."""
        self._call("SetMSDC")
