"""Officer binding through the whole daemon: loop devices, the fake SDK, Mosquitto, the CLI."""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.cli import main
from agent.config import parse_config
from agent.evidence.custody import iter_entries
from firmware_interface.zfy import ZfySdk, identity_of
from tests.broker import Broker, mosquitto_binary, running_broker
from tests.dock import running, wait_for
from tests.loopdev import Loops, blank_image, build_ext4, recorder_tree  # noqa: E402
from tests.media import make_photo
from tests.mqtt_helpers import Recorder
from tests.zfy_kit import ID_CODE, PASSWORD, Control  # noqa: E402

pytest_plugins = ["tests.loopdev", "tests.zfy_kit"]  # loops, media_files, fake_sdk, control
pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
ROOT = "dock/dock-hw"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def write_config(tmp: Path, device: str, lib: str, port: int) -> Path:
    """The dock's TOML (the CLI reads a file), one zfy bay on `device`."""
    secret = tmp / "zfy.pw"
    secret.write_text(PASSWORD + "\n")
    path = tmp / "dock-agent.toml"
    path.write_text(
        f'[dock]\nid = "dock-hw"\ndata_dir = "{tmp / "data"}"\n'
        f'[[bay]]\nnumber = 1\nudev_match = {{ DEVNAME = "{device}" }}\ndriver = "zfy"\n'
        f'[recorders]\nmount_dir = "{tmp / "media"}"\nzfy_library = "{lib}"\n'
        f'zfy_password_file = "{secret}"\nzfy_id_code = "{ID_CODE}"\n'
        "[policy]\nrequire_synced_clock = false\ndisk_reserve_bytes = 0\n"
        'delete_from_recorder = "never"\n'
        f"[mqtt]\nport = {port}\n"
    )
    return path


def command(it: Recorder, payload: dict[str, Any]) -> dict[str, Any]:
    """Send R/cmd/assign as IT does and return the reply."""
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = b"c-1"
    data = json.dumps(payload, ensure_ascii=False).encode()
    it.client.publish(f"{ROOT}/cmd/assign", data, qos=1, properties=props).wait_for_publish(5)
    reply: dict[str, Any] = json.loads(it.next().payload)
    return reply


def redock(loops: Loops, image: Path, device: str) -> None:
    """Attach again once the device is free (probes of the last volume may still hold it)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            loops.attach(image, device)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def idle(daemon: Any, clips: int) -> bool:
    view = daemon.bays[1].view
    done = len(list(daemon.services.index.iter_all())) >= clips
    return bool(done and view.state in ("charging", "ready"))


def test_assign_writes_the_officer_and_the_next_docking_files_under_them(
    loops: Loops,
    fake_sdk: str,
    control: Control,
    broker: Broker,
    tmp_path: Path,
    media_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    device = loops.free()
    first = build_ext4(recorder_tree(tmp_path / "tree", media_files), tmp_path / "rec.img")
    control.set(msdc_cmd=loops.swap_command(device, first))
    path = write_config(tmp_path, device, fake_sdk, broker.port)
    cfg = parse_config(tomllib.loads(path.read_text()))
    it = Recorder(broker, "it-hw", f"{ROOT}/cmd/+/reply")
    with running(cfg) as (daemon, _views):
        loops.attach(blank_image(tmp_path / "sdk-mode.img"), device)  # the recorder, SDK mode
        wait_for(lambda: idle(daemon, len(media_files)), 60, "the first docking offloaded")
        wait_for(lambda: daemon.parts.mqtt.wait_connected(0.1), 10, "the broker")

        too_long = command(it, {"bay": 1, "officer": "654321", "name": "名" * 17})
        assert too_long["ok"] is False and "userName holds at most 32" in too_long["error"]
        no_bay = command(it, {"bay": 4, "officer": "654321"})
        assert no_bay["ok"] is False and "no bay 4 (bays: 1)" in no_bay["error"]
        events = [e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")]
        assert "command" not in events, "a refused command leaves no custody entry"

        code = main(["assign", "1", "--officer", "654321", "--name", "李四", "-c", str(path)])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "recorder ZFY12345 assigned to officer 654321 李四" in out.out
        assert "was 012345" in out.out
        assert daemon.bays[1].view.officer_id == "654321"
        by_mqtt = command(it, {"bay": 1, "officer": "654322", "name": "王五"})
        assert by_mqtt["ok"] is True and by_mqtt["result"]["officer_id"] == "654322"
        code = main(["assign", "1", "--officer", "654321", "--name", "李四", "-c", str(path)])
        assert code == 0

        recorder = identity_of(ZfySdk(fake_sdk, PASSWORD, ID_CODE).info())[0]
        assert (recorder.officer_id, recorder.officer_name) == ("654321", "李四")  # GetZFYInfo
        assert recorder.unit_no == "320100000000", "the unit is kept when none is given"

        # Taken out for a shift. A loop device detached while mounted lingers (autoclear)
        # until unmounted, where a USB recorder would vanish at once: unmount it too.
        loops.vanish(tmp_path / "media" / "bay1", device)
        subprocess.run(["umount", "-l", str(tmp_path / "media" / "bay1")], check=True)
        wait_for(lambda: daemon.bays[1].view.state == "empty", 30, "the bay empty")
        name = "DCIM/100MEDIA/ZFY0012345_654321_20261122080000_0005.JPG"
        new = {name: make_photo(tmp_path / "new.jpg", size="320x240")}  # other bytes
        second = build_ext4(recorder_tree(tmp_path / "tree2", new), tmp_path / "rec2.img")
        control.set(msdc_cmd=loops.swap_command(device, second))
        redock(loops, blank_image(tmp_path / "sdk-mode2.img"), device)
        wait_for(lambda: idle(daemon, len(media_files) + 1), 60, "the second docking offloaded")
        records = {r["file_name"]: r for r in daemon.services.index.iter_all()}
    it.close()
    new_record = records["ZFY0012345_654321_20261122080000_0005.JPG"]
    assert (new_record["officer_id"], new_record["officer_name"]) == ("654321", "李四")
    old = [records[Path(name).name] for name in media_files]
    assert {r["officer_id"] for r in old} == {"012345"}, "clips already filed keep their officer"
    assigned = [
        e for e in iter_entries(cfg.data_dir / "custody.jsonl") if e["event"] == "recorder_assigned"
    ]
    assert [(e["officer_id"], e["by"]) for e in assigned] == [
        ("654321", "cli:root"),
        ("654322", "mqtt"),
        ("654321", "cli:root"),
    ]
    assert assigned[0]["previous_officer_id"] == "012345" and assigned[0]["device_id"] == "ZFY12345"
