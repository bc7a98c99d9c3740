"""Real recorders through the whole daemon: loop devices, kernel uevents, the fake GA/T 947 SDK."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.config import DockConfig, parse_config
from agent.daemon.runtime import Daemon
from agent.daemon.wiring import assemble
from agent.events import BayView
from agent.evidence.custody import iter_entries
from agent.evidence.record import manifest
from tests.dock import CLOSED_PORT, Views, wait_for
from tests.loopdev import Loops, blank_image, build_ext4, recorder_tree  # noqa: E402
from tests.zfy_kit import ID_CODE, PASSWORD, Control  # noqa: E402

pytest_plugins = ["tests.loopdev", "tests.zfy_kit"]  # loops, media_files, fake_sdk, control


def config(tmp: Path, device: str, driver: str, **recorders: str) -> DockConfig:
    return parse_config(
        {
            "dock": {"id": "dock-hw", "data_dir": str(tmp / "data")},
            "bay": [{"number": 1, "udev_match": {"DEVNAME": device}, "driver": driver}],
            "recorders": {"mount_dir": str(tmp / "media"), **recorders},
            "policy": {
                "require_synced_clock": False,
                "disk_reserve_bytes": 0,
                "delete_from_recorder": "never",
            },
            "mqtt": {"port": CLOSED_PORT},
            "ui": {"listen": ""},
        }
    )


def start(cfg: DockConfig) -> tuple[Daemon, Views]:
    daemon = assemble(cfg, refresh_s=0.3)
    views = Views()
    daemon.services.bus.subscribe(views)
    daemon.start()
    return daemon, views


def state(views: Views) -> str | None:
    view = views.latest(1)
    return view.state if view else None


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zfy_recorder_identified_clock_set_switched_and_offloaded(
    loops: Loops,
    fake_sdk: str,
    control: Control,
    tmp_path: Path,
    media_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_ZFY_SCRIBBLE", "1")  # vendor code writing into every string
    device = loops.free()
    volume = build_ext4(recorder_tree(tmp_path / "tree", media_files), tmp_path / "rec.img")
    control.set(msdc_cmd=loops.swap_command(device, volume))
    secret = tmp_path / "zfy.pw"
    secret.write_text(PASSWORD + "\n")
    cfg = config(
        tmp_path,
        device,
        "zfy",
        zfy_library=fake_sdk,
        zfy_password_file=str(secret),
        zfy_id_code=ID_CODE,
    )
    daemon, views = start(cfg)
    try:
        loops.attach(blank_image(tmp_path / "sdk-mode.img"), device)  # the recorder, SDK mode
        wait_for(
            lambda: (
                state(views) in ("charging", "ready", "fault")
                and views.latest(1).progress.clips_total > 0
            ),
            60,
            "offload through the SDK",
        )  # type: ignore[union-attr]
        records = list(daemon.services.index.iter_all())
        view = views.latest(1)
    finally:
        daemon.stop()
    calls = control.calls()
    assert any(c.startswith("SyncDevTime 5") for c in calls), calls
    assert {c.split()[2] for c in calls if not c.startswith("Init_Device")} == {PASSWORD}
    assert [c.split()[2] for c in calls if c.startswith("Init_Device")] == [ID_CODE]
    assert any(c.startswith("SetMSDC 7") for c in calls), calls
    assert view is not None and view.device_id == "ZFY12345"  # identity from the SDK
    assert view.battery_pct == 87
    assert {r["file_name"]: r["sha256"] for r in records} == {
        Path(k).name: sha(v) for k, v in media_files.items()
    }
    assert all(r["officer_id"] == "012345" for r in records)
    assert {manifest(r).get("recorder_resolution") for r in records} == {"1920x1080"}
    events = [e["event"] for e in iter_entries(cfg.data_dir / "custody.jsonl")]
    assert "clock_set" in events and events.count("clip_offloaded") == len(media_files)


def test_mass_storage_device_vanishing_mid_copy_then_redocked(
    loops: Loops, tmp_path: Path, media_files: dict[str, Path]
) -> None:
    tree = recorder_tree(tmp_path / "tree", media_files)
    big = tree / "DCIM" / "100MEDIA" / "ZFY0012345_012345_20261121091403_0099.MP4"
    big.write_bytes(os.urandom(400 * 2**20))
    small = sum(p.stat().st_size for p in media_files.values())
    volume = build_ext4(tree, tmp_path / "rec.img", size_mb=450)
    device = loops.attach(volume)
    loops.detach(device)
    cfg = config(tmp_path, device, "mass_storage")
    daemon, views = start(cfg)
    puller = Puller(loops, tmp_path / "media" / "bay1", device, small)
    daemon.services.bus.subscribe(puller)
    try:
        loops.attach(volume, device)
        wait_for(lambda: puller.pulled_at is not None, 60, "the cable pulled mid-copy")
        wait_for(lambda: state(views) == "empty", 30, "the bay to show the recorder gone")
        done, total = puller.pulled_at  # type: ignore[misc]
        assert small < done < total, "pulled while the big clip was being copied"
        partial = [r for r in daemon.services.index.iter_all() if r["file_name"] == big.name]
        assert partial == [], "a partial copy is never indexed"
        assert list((cfg.data_dir / "evidence" / ".incoming").iterdir()) == []
        assert daemon.healthy()
        loops.attach(volume, device)  # docked again: everything arrives
        wait_for(
            lambda: len(list(daemon.services.index.iter_all())) == len(media_files) + 1,
            60,
            "every clip after re-docking",
        )
        records = {r["file_name"]: r for r in daemon.services.index.iter_all()}
    finally:
        daemon.stop()
    assert records[big.name]["sha256"] == sha(big)
    for rel, path in media_files.items():
        assert records[Path(rel).name]["sha256"] == sha(path)


class Puller:
    """Pulls the recorder's cable from inside the bay's progress report, so mid-copy for sure."""

    def __init__(self, loops: Loops, mount_point: Path, device: str, after: int) -> None:
        self.loops, self.mount_point, self.device, self.after = loops, mount_point, device, after
        self.pulled_at: tuple[int, int] | None = None

    def __call__(self, item: Any) -> None:
        if self.pulled_at is not None or not isinstance(item, BayView):
            return
        p = item.progress
        if item.state == "offloading" and self.after < p.bytes_done < p.bytes_total * 0.9:
            self.loops.vanish(self.mount_point, self.device)  # runs in the bay's own thread
            self.pulled_at = (p.bytes_done, p.bytes_total)
