"""The zfy driver against a fake GA/T 947 SDK built from tests/fake_zfy/fake_zfy.c."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.config import BaySection, RecordersSection
from firmware_interface.base import RecorderError
from firmware_interface.discovery import BayFault, BayWaiting, Docked, Undocked
from firmware_interface.zfy import ZfyError, ZfyRecorder, ZfySdk, identity_of
from tests.loopdev import (  # noqa: E402
    CLIP_NAMES,
    Loops,
    WatcherFactory,
    blank_image,
    build_ext4,
    recorder_tree,
)
from tests.zfy_kit import ID_CODE, PASSWORD, TZ, Control, local_zone

pytest_plugins = [
    "tests.loopdev",
    "tests.zfy_kit",
]  # loops, media_files, start_watcher, fake_sdk, control


def test_identity_in_gbk_battery_and_clock_set(fake_sdk: str, control: Control) -> None:
    sdk = ZfySdk(fake_sdk, PASSWORD, ID_CODE)
    sdk.connect()
    identity, findings = identity_of(sdk.info())
    assert (identity.device_id, identity.officer_id) == ("ZFY12345", "012345")
    assert (identity.officer_name, identity.unit_name) == ("张三", "水政监察大队")
    assert identity.unit_no == "320100000000" and findings == []
    assert sdk.battery() == 87
    sdk.sync_time()
    assert [c.split()[:3] for c in control.calls()] == [
        ["Init_Device", "1", ID_CODE],  # the IDCode, not the password
        ["GetZFYInfo", "3", PASSWORD],
        ["ReadDeviceBatteryDumpEnergy", "3", PASSWORD],
        ["SyncDevTime", "5", PASSWORD],
    ]


@pytest.mark.parametrize(
    ("setting", "call", "code"),
    [
        ({"fail_Init_Device": "2"}, "connect", "zfy_connect_failed"),
        ({"id_code": "OTHER"}, "connect", "zfy_connect_failed"),
        ({"password": "other"}, "info", "zfy_wrong_password"),
        ({"password": "other"}, "battery", "zfy_wrong_password"),
        ({"fail_ReadDeviceResolution": "4"}, "resolution", "zfy_wrong_password"),
        ({"fail_SyncDevTime": "6"}, "sync_time", "zfy_clock_set_failed"),
        ({"fail_SetMSDC": "8"}, "set_msdc", "zfy_mass_storage_failed"),
        ({"fail_ReadDeviceBatteryDumpEnergy": "10"}, "battery", "zfy_sdk_error"),
    ],
)
def test_each_failure_code_is_a_clear_error(
    fake_sdk: str, control: Control, setting: dict[str, str], call: str, code: str
) -> None:
    control.set(**setting)
    with pytest.raises(ZfyError) as info:
        getattr(ZfySdk(fake_sdk, PASSWORD, ID_CODE), call)()
    assert info.value.code == code
    assert "iRet" in str(info.value)  # the message names the SDK's status code


def test_text_that_is_not_gbk_is_a_finding(fake_sdk: str, control: Control) -> None:
    control.set(user_name=b"\xff\xfe\x80")
    _, findings = identity_of(ZfySdk(fake_sdk, PASSWORD, ID_CODE).info())
    assert [f.code for f in findings] == ["zfy_bad_text"]


def test_unusable_library_and_unsafe_serial(fake_sdk: str, control: Control) -> None:
    with pytest.raises(ZfyError) as info:
        ZfySdk("/nonexistent/libzfy.so", PASSWORD, ID_CODE)
    assert info.value.code == "zfy_library_unusable"
    control.set(serial="../x")
    with pytest.raises(RecorderError) as bad:
        identity_of(ZfySdk(fake_sdk, PASSWORD, ID_CODE).info())
    assert bad.value.code == "bad_device_id"


def test_clock_is_set_to_the_docks_clock_only(fake_sdk: str, control: Control) -> None:
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 1.0)
    assert not rec.capabilities.read_clock and rec.capabilities.set_clock
    assert rec.status().clock is None and rec.status().battery_pct == 87
    now = datetime.now(TZ).replace(tzinfo=None)
    with pytest.raises(RecorderError) as info:
        rec.set_clock(now - timedelta(hours=1))
    assert info.value.code == "clock_source_mismatch"
    rec.set_clock(now)
    call, stamp = control.calls()[-1].rsplit(" ", 1)
    assert call == f"SyncDevTime 5 {PASSWORD}"
    assert abs((datetime.fromisoformat(stamp) - now).total_seconds()) < 5  # the recorders' time
    with pytest.raises(RecorderError) as timeout:
        rec.list_clips()  # SetMSDC, then no volume ever appears
    assert timeout.value.code == "zfy_storage_timeout"


def zfy_recorders(tmp_path: Path, lib: str, password: str) -> RecordersSection:
    secret = tmp_path / "zfy.pw"
    secret.write_text(password + "\n")
    return RecordersSection(
        mount_dir=str(tmp_path / "media"),
        zfy_library=lib,
        zfy_password_file=str(secret),
        zfy_id_code=ID_CODE,
    )


def test_docked_through_sdk_then_mass_storage(
    loops: Loops,
    start_watcher: WatcherFactory,
    fake_sdk: str,
    control: Control,
    tmp_path: Path,
    media_files: dict[str, Path],
) -> None:
    device = loops.free()
    volume = build_ext4(recorder_tree(tmp_path / "tree", media_files), tmp_path / "rec.img")
    control.set(msdc_cmd=loops.swap_command(device, volume))
    bays = [BaySection(number=6, udev_match={"DEVNAME": device}, driver="zfy")]
    _, events = start_watcher(bays, zfy_recorders(tmp_path, fake_sdk, PASSWORD))
    loops.attach(blank_image(tmp_path / "sdk-mode.img"), device)  # the recorder, in SDK mode
    docked = events.wait_for(Docked, 6)
    rec = docked.recorder
    assert docked.driver == "zfy" and rec.identity().officer_name == "张三"
    assert rec.status().battery_pct == 87
    rec.set_clock(datetime.now(TZ).replace(tzinfo=None))
    assert not any(c.startswith("SetMSDC") for c in control.calls())
    clips = rec.list_clips().clips  # switches to mass storage and waits for the volume
    assert any(c.startswith("SetMSDC 7") for c in control.calls())
    assert [c.path for c in clips] == sorted(CLIP_NAMES)
    for clip in clips:
        with rec.open_clip(clip) as fh:
            assert fh.read() == media_files[clip.path].read_bytes()
    identity = rec.identity()
    assert (identity.device_id, identity.model) == ("ZFY12345", "DSJ-T9")  # SDK wins
    assert [f.code for f in rec.identity_findings()] == ["identity_mismatch"]
    rec.close()
    loops.detach(device)
    events.wait_for(Undocked, 6)
    assert not [e for e in events.pending() if isinstance(e, Undocked | BayFault)]
    assert hashlib.sha256(volume.read_bytes()).hexdigest()  # image intact for inspection


@pytest.mark.parametrize(
    ("password", "id_code", "code", "needle"),
    [
        ("wrong", ID_CODE, "zfy_wrong_password", "password"),
        (PASSWORD, "HACH9", "zfy_connect_failed", "recorders.zfy_id_code = 'HACH9'"),
    ],
)
def test_wrong_password_or_id_code_is_a_bay_fault(
    loops: Loops,
    start_watcher: WatcherFactory,
    fake_sdk: str,
    control: Control,
    tmp_path: Path,
    password: str,
    id_code: str,
    code: str,
    needle: str,
) -> None:
    device = loops.free()
    bays = [BaySection(number=7, udev_match={"DEVNAME": device}, driver="zfy")]
    recorders = replace(zfy_recorders(tmp_path, fake_sdk, password), zfy_id_code=id_code)
    _, events = start_watcher(bays, recorders)
    loops.attach(blank_image(tmp_path / "sdk-mode.img"), device)
    fault = events.wait_for(BayFault, 7)
    assert fault.code == code and needle in fault.message
    loops.detach(device)
    events.wait_for(Undocked, 7)


def test_clock_left_alone_when_the_docks_zone_is_not_the_recorders(
    fake_sdk: str, control: Control
) -> None:
    """SyncDevTime writes the dock's local time: in UTC it would set a Beijing recorder 8 h off."""
    rec = ZfyRecorder.bring_up(ZfySdk(fake_sdk, PASSWORD, ID_CODE), 1, TZ, 1.0)
    with local_zone("UTC"):
        with pytest.raises(RecorderError) as info:
            rec.set_clock(datetime.now(TZ).replace(tzinfo=None))
    assert info.value.code == "clock_source_mismatch"
    assert "Asia/Shanghai" in str(info.value) and "timedatectl" in str(info.value)
    assert not any(c.startswith("SyncDevTime") for c in control.calls())


@pytest.mark.parametrize(("serial_b", "outcome"), [("ZFY67890", "docked"), ("ZFY12345", "fault")])
def test_a_second_recorder_waits_until_the_first_leaves_sdk_mode(
    loops: Loops,
    start_watcher: WatcherFactory,
    fake_sdk: str,
    control: Control,
    tmp_path: Path,
    media_files: dict[str, Path],
    serial_b: str,
    outcome: str,
) -> None:
    """The SDK talks to "the" recorder: two in SDK mode at once would mix their identities."""
    dev_a = loops.attach(blank_image(tmp_path / "a-sdk-mode.img"))  # docked at start
    dev_b = loops.free()
    volume_a = build_ext4(recorder_tree(tmp_path / "tree", media_files), tmp_path / "a.img")
    bays = [
        BaySection(number=6, udev_match={"DEVNAME": dev_a}, driver="zfy"),
        BaySection(number=7, udev_match={"DEVNAME": dev_b}, driver="zfy"),
    ]
    _, events = start_watcher(bays, zfy_recorders(tmp_path, fake_sdk, PASSWORD))
    rec_a = events.wait_for(Docked, 6).recorder
    assert rec_a.identity().device_id == "ZFY12345"
    control.set(serial=serial_b)  # the SDK now answers for whichever recorder it reaches
    loops.attach(blank_image(tmp_path / "b-sdk-mode.img"), dev_b)
    waiting = events.wait_for(BayWaiting, 7)  # the officer sees why nothing happens yet
    assert waiting.code == "zfy_waiting_for_sdk" and "bay 6" in waiting.message
    time.sleep(1.0)  # no-event wait: bay 7 must stay quiet while bay 6 is in SDK mode
    assert [e for e in events.pending() if e.bay == 7] == [], "bay 7 waits while 6 is in SDK mode"
    assert sum(c.startswith("Init_Device") for c in control.calls()) == 1
    control.set(msdc_cmd=loops.swap_command(dev_a, volume_a))
    assert len(rec_a.list_clips().clips) == len(CLIP_NAMES)  # bay 6 leaves SDK mode
    if outcome == "docked":
        rec_b = events.wait_for(Docked, 7).recorder
        assert rec_b.identity().device_id == "ZFY67890"
        assert rec_a.identity().device_id == "ZFY12345"
    else:
        fault = events.wait_for(BayFault, 7)
        assert fault.code == "zfy_ambiguous" and "bay 6" in fault.message
    asked = len(control.calls())
    assert rec_a.status().battery_pct == 87  # the last reading: the SDK may be on bay 7 now
    with pytest.raises(RecorderError) as late:
        rec_a.set_clock(datetime.now(TZ).replace(tzinfo=None))
    assert late.value.code == "zfy_clock_after_switch"
    assert len(control.calls()) == asked, "no SDK call for a recorder that left SDK mode"
