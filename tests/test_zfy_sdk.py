"""The SDK as vendors ship it: IDCode, private string buffers, resolution, officer binding."""

from __future__ import annotations

import ctypes
from datetime import datetime

import pytest

from firmware_interface.base import RecorderError
from firmware_interface.zfy import ZfyError, ZfyRecorder, ZfySdk
from firmware_interface.zfy_officer import OfficerTextError, officer_info
from firmware_interface.zfy_sdk import ZfyInfo
from tests.zfy_kit import ID_CODE, PASSWORD, TZ, Control

pytest_plugins = ["tests.zfy_kit"]  # fake_sdk, fake_sdk_no_resolution, control


def args_of(control: Control) -> dict[str, set[str]]:
    """The string argument each SDK function received, over all its calls."""
    seen: dict[str, set[str]] = {}
    for call in control.calls():
        name, _, arg = call.split()[:3]
        seen.setdefault(name, set()).add(arg)
    return seen


def test_init_device_gets_the_id_code_and_a_handle_above_4_gib(
    fake_sdk: str, control: Control
) -> None:
    sdk = ZfySdk(fake_sdk, PASSWORD, ID_CODE)
    sdk.connect()
    assert control.calls() == [f"Init_Device 1 {ID_CODE}"]
    # The fake's handle is 1 << 32: read as an int (the old prototype) it was 0, "failed".
    assert sdk.handle == 1 << 32 if ctypes.sizeof(ctypes.c_void_p) == 8 else sdk.handle == 1


def test_a_wrong_id_code_is_a_clear_connect_failure(fake_sdk: str, control: Control) -> None:
    with pytest.raises(ZfyError) as info:
        ZfySdk(fake_sdk, PASSWORD, "HACH9").connect()
    message = str(info.value)
    assert info.value.code == "zfy_connect_failed"
    assert "recorders.zfy_id_code = 'HACH9'" in message and "iRet 2" in message
    assert f"GetIDCode gives {ID_CODE!r}" in message  # what the SDK expects, when it can say


def test_a_scribbling_sdk_gets_the_right_strings_on_every_call(
    fake_sdk: str, control: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vendor code writes into the strings it is given: each call must get a fresh copy."""
    monkeypatch.setenv("FAKE_ZFY_SCRIBBLE", "1")
    sdk = ZfySdk(fake_sdk, PASSWORD, ID_CODE)
    rec = ZfyRecorder.bring_up(sdk, 1, TZ, 0.2)
    for _ in range(3):
        assert rec.status().battery_pct == 87
    rec.set_clock(datetime.now(TZ).replace(tzinfo=None))
    rec.write_officer("654321", "李四", None)
    sdk.set_msdc()
    seen = args_of(control)
    assert seen.pop("Init_Device") == {ID_CODE}
    assert set(seen) >= {"GetZFYInfo", "ReadDeviceBatteryDumpEnergy", "SyncDevTime", "SetMSDC"}
    assert set(seen) >= {"ReadDeviceResolution", "WriteZFYInfo"}
    assert all(args == {PASSWORD} for args in seen.values()), seen
    assert PASSWORD == "123456" and ID_CODE == "HACH8"  # the interpreter's own strings intact


def test_python_bytes_are_refused_as_a_string_argument(fake_sdk: str, control: Control) -> None:
    sdk = ZfySdk(fake_sdk, PASSWORD, ID_CODE)
    with pytest.raises(ctypes.ArgumentError):
        sdk._lib.SyncDevTime(PASSWORD.encode(), ctypes.byref(ctypes.c_int()))
    assert control.calls() == []


def test_resolution_where_the_sdk_has_it(
    fake_sdk: str, fake_sdk_no_resolution: str, control: Control
) -> None:
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 0.2)
    assert rec.status().resolution == (1920, 1080)
    bare = ZfySdk(fake_sdk_no_resolution, PASSWORD, ID_CODE)
    assert not bare.has("ReadDeviceResolution") and bare.resolution() is None
    rec = ZfyRecorder.bring_up(bare, 1, TZ, 0.2)
    assert rec.status().resolution is None and rec.identity_findings() == []
    assert rec.status().battery_pct == 87  # a missing function is a capability, not an error


@pytest.mark.parametrize("answer", ["99999x1080", "0x0", "garbage"])
def test_an_impossible_resolution_is_a_finding_not_a_failed_docking(
    fake_sdk: str, control: Control, answer: str
) -> None:
    control.set(resolution=answer)
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 0.2)
    assert rec.status().resolution is None
    assert [f.code for f in rec.identity_findings()] == ["zfy_resolution_unread"]


def test_write_officer_is_read_back_through_get_zfy_info(fake_sdk: str, control: Control) -> None:
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 0.2)
    identity = rec.write_officer("654321", "李四", "320100000001")
    assert (identity.officer_id, identity.officer_name, identity.unit_no) == (
        "654321",
        "李四",
        "320100000001",
    )
    assert identity.unit_name == ""  # another unit: the old unit's name must not stay
    again = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 2, TZ, 0.2)
    assert again.identity() == identity  # the recorder kept it (a fresh GetZFYInfo)
    assert rec.identity().officer_id == "654321"
    assert control.store.read_bytes()[15:19] == "李四".encode("gbk")  # userName, GBK


def test_write_officer_after_the_switch_proves_the_serial_first(
    fake_sdk: str, control: Control
) -> None:
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 0.2)
    with pytest.raises(RecorderError):
        rec.list_clips()  # SetMSDC; no volume appears: switched, out of SDK mode
    control.set(serial="ZFY67890")  # the SDK now reaches another recorder
    with pytest.raises(RecorderError) as other:
        rec.write_officer("654321", "李四", None)
    assert other.value.code == "zfy_other_recorder" and "ZFY67890" in str(other.value)
    assert not any(c.startswith("WriteZFYInfo") for c in control.calls())
    control.set(serial="ZFY12345", fail_Init_Device="2")  # in mass storage, deaf to the SDK
    with pytest.raises(RecorderError) as deaf:
        rec.write_officer("654321", "", None)
    assert deaf.value.code == "zfy_not_reachable" and "nothing written" in str(deaf.value)
    del control.values["fail_Init_Device"]
    control.set()  # answers the SDK again
    assert rec.write_officer("654321", "", None).officer_id == "654321"
    assert [c.split()[0] for c in control.calls()][-4:] == [
        "Init_Device",  # connected again before anything was written
        "GetZFYInfo",
        "WriteZFYInfo",
        "GetZFYInfo",
    ]


def test_write_officer_waits_while_another_recorder_is_in_sdk_mode(
    fake_sdk: str, control: Control
) -> None:
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 0.2)
    with pytest.raises(RecorderError):
        rec.list_clips()
    control.set(serial="ZFY67890")
    other = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 2, TZ, 0.2)
    with pytest.raises(RecorderError) as busy:
        rec.write_officer("654321", "李四", None)
    assert busy.value.code == "zfy_sdk_busy" and "bay 2" in str(busy.value)
    other.close()


def info_of(**fields: bytes) -> ZfyInfo:
    info = ZfyInfo()
    info.cSerial = b"ZFY12345"
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("officer", "name", "unit", "needle"),
    [
        ("", "", None, "officer id (--officer) is empty"),
        ("0123_45", "", None, "letters and digits only"),
        ("1234567", "", None, "is 7 bytes in GBK; the recorder's userNo holds at most 6"),
        ("012345", "张" * 17, None, "is 34 bytes in GBK; the recorder's userName holds at most 32"),
        ("012345", "Ann 😀", None, "has no GBK code"),
        ("012345", "a\nb", None, "control characters"),
        ("012345", "", "3" * 13, "unit number (--unit) '3333333333333' is 13 bytes"),
    ],
)
def test_officer_text_that_does_not_fit_is_refused_naming_the_field(
    officer: str, name: str, unit: str | None, needle: str
) -> None:
    with pytest.raises(OfficerTextError) as info:
        officer_info(info_of(), officer, name, unit)
    assert needle in str(info.value)
    assert info.value.code == "zfy_officer_text"


def test_officer_info_keeps_serial_and_unit_and_clears_old_text() -> None:
    old = info_of(userNo=b"999999", userName="欧阳长名字".encode("gbk"), unitNo=b"3201")
    old.unitName = "水政监察大队".encode("gbk")
    new = officer_info(old, "A1", "李四", None)
    assert bytes(new)[:8] == b"ZFY12345"
    assert (new.userNo, new.userName, new.unitNo) == (b"A1", "李四".encode("gbk"), b"3201")
    assert new.unitName == "水政监察大队".encode("gbk")
    assert bytes(new)[15 + 4 : 15 + 33] == bytes(29), "no byte of the longer old name is left"
    assert officer_info(old, "A1", "", "3202").unitName == b""
